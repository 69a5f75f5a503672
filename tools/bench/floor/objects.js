// make bench's floor for durable submits on workerd: a bare Worker that writes one small
// record per POST into a Durable Object's SQLite storage and answers 201 with its key (once
// durable: workerd's output gate), and reads it back on GET ?k=. `?objects=0`: a new object
// per record (named by its key); `?objects=N`: one of N fixed objects, from the key's first
// byte (the gateway's layout with N = 256).
//
// `&job=1`: what the gateway does for an async submit, with nothing else: the record, then
// the upstream's async_predict (its webhook pointed back here), then the upstream's id on the
// record, then 201; the upstream's webhook (`&inbox=1`) writes the result onto the record.
// No authentication, validation or signature check: the runtime's floor for the protocol.
import { DurableObject } from "cloudflare:workers";

export class Records extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS r (k TEXT PRIMARY KEY, v TEXT NOT NULL, u TEXT)");
  }

  async fetch(request) {
    const url = new URL(request.url);
    const k = url.searchParams.get("k");
    const sql = this.ctx.storage.sql;
    if (request.method === "POST" && url.searchParams.has("inbox")) {
      sql.exec("UPDATE r SET v = ? WHERE k = ?", await request.text(), k);
      return new Response(null, { status: 200 });
    }
    if (request.method === "POST") {
      const body = await request.text();
      sql.exec("INSERT INTO r (k, v) VALUES (?, ?) ON CONFLICT(k) DO NOTHING", k, body);
      if (url.searchParams.has("job")) {
        const inbox = `${this.env.SELF}/?objects=${url.searchParams.get("objects")}&inbox=1&k=${k}`;
        const answer = await fetch(`${this.env.UPSTREAM}/models/demo/production/async_predict`, {
          method: "POST",
          headers: { authorization: `Api-Key ${this.env.UPSTREAM_KEY}`, "content-type": "application/json" },
          body: JSON.stringify({ model_input: JSON.parse(body).model_input ?? null, webhook_endpoint: inbox }),
        });
        const { request_id } = await answer.json();
        // Its own column: the webhook may have written the result meanwhile.
        sql.exec("UPDATE r SET u = ? WHERE k = ?", request_id, k);
      }
      return Response.json({ request_id: k }, { status: 201 });
    }
    const found = sql.exec("SELECT v FROM r WHERE k = ?", k).toArray().length > 0;
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
    url.searchParams.set("k", k);
    return stub.fetch("http://records/" + url.search, { method: request.method, body });
  },
};
