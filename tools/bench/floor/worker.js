// The workerd floor: the least a Worker can do to pass a call on. It sends the caller's
// request, method, headers and body as they are, to the same path on UPSTREAM, and answers
// with the upstream's answer as it is. `make bench` measures it beside the gateway.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    return fetch(env.UPSTREAM + url.pathname + url.search, request);
  },
};
