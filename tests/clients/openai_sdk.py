"""The OpenAI Python SDK against the gateway: what an app that only changed its base URL sees.

Usage: openai_sdk.py BASE_URL API_KEY MODEL

Runs the same calls through two base URLs: a model's OpenAI-compatible server behind its sync
passthrough (``{BASE_URL}/models/demo/environments/production/sync/v1``) and the gateway's
own front door (``{BASE_URL}/v1``, which routes by ``model``). For each: ``models.list``, a
chat completion, the same completion streamed (with the usage chunk), and a bad request,
which must reach the SDK as the upstream's own error. Prints one JSON object per line;
exits non-zero with the SDK's error if a call that should succeed fails.
"""

import json
import sys

import openai


def main() -> None:
    base_url, api_key, model = sys.argv[1:]
    messages = [{"role": "user", "content": "hello from the openai sdk"}]
    for label, url in [("sync", f"{base_url}/models/demo/environments/production/sync/v1"),
                       ("v1", f"{base_url}/v1")]:
        client = openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=30)
        out = {"base": label, "models": [m.id for m in client.models.list()]}
        completion = client.chat.completions.create(model=model, messages=messages)
        out["content"] = completion.choices[0].message.content
        out["usage"] = completion.usage.total_tokens
        deltas, usage = [], None
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            deltas += [c.delta.content for c in chunk.choices if c.delta.content]
            usage = chunk.usage.total_tokens if chunk.usage else usage
        out["streamed"], out["stream_events"], out["stream_usage"] = "".join(deltas), len(deltas), usage
        try:
            client.chat.completions.create(model=model, messages=[])
            out["bad_request"] = "accepted"
        except openai.BadRequestError as e:
            out["bad_request"] = {"status": e.status_code, "type": (e.body or {}).get("type")}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
