// make bench's floor for durable submits on workerd: a bare Worker that writes one small
// record per POST into a Durable Object's SQLite storage and answers 201 with its key (once
// durable: workerd's output gate), and reads it back on GET ?k=. `?objects=0`: a new object
// per record (named by its key); `?objects=N`: one of N fixed objects, from the key's first
// byte (the gateway's layout with N = 256).
import { DurableObject } from "cloudflare:workers";

export class Records extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS r (k TEXT PRIMARY KEY, v TEXT NOT NULL)");
  }

  async fetch(request) {
    const k = new URL(request.url).searchParams.get("k");
    if (request.method === "POST") {
      this.ctx.storage.sql.exec("INSERT INTO r (k, v) VALUES (?, ?) ON CONFLICT(k) DO NOTHING", k, await request.text());
      return Response.json({ request_id: k }, { status: 201 });
    }
    const found = this.ctx.storage.sql.exec("SELECT v FROM r WHERE k = ?", k).toArray().length > 0;
    return new Response(null, { status: found ? 200 : 404 });
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const objects = Number(url.searchParams.get("objects") || "0");
    const k = url.searchParams.get("k") || crypto.randomUUID().replaceAll("-", "");
    const name = objects > 0 ? "records-" + (parseInt(k.slice(0, 2), 16) % objects) : k;
    const stub = env.RECORDS.get(env.RECORDS.idFromName(name));
    const body = request.method === "POST" ? await request.text() : undefined;
    return stub.fetch("http://records/?k=" + k, { method: request.method, body });
  },
};
