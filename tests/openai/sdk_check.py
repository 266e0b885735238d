"""The gateway's OpenAI-compatible API driven by the official `openai`
package (pinned in local/requirements-dev.txt), as any program would use
it. Run by tests/tests/openai_journey.rs; prints what it saw as one JSON
line. Every client is built with max_retries=0, so an error is seen as the
SDK raises it, never retried away.

  sdk_check.py use      models, a buffered and a streamed completion, 404, 402
  sdk_check.py revoked  the key is refused: AuthenticationError

Environment: GATEWAY_V1 (the base URL, ending in /v1), KEY, POOR_KEY
(a key of a user without credits), MODEL.
"""

import json
import os
import sys

import openai
from openai import OpenAI


def client(key):
    return OpenAI(base_url=os.environ["GATEWAY_V1"], api_key=key, max_retries=0, timeout=30)


def ask(text):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def use():
    gateway = client(os.environ["KEY"])
    model = os.environ["MODEL"]
    seen = {}

    seen["models"] = [m.id for m in gateway.models.list()]
    seen["retrieved"] = gateway.models.retrieve(model).id

    done = gateway.chat.completions.create(model=model, messages=ask("Hi there"))
    seen["buffered"] = done.choices[0].message.content
    seen["buffered_usage"] = done.usage.total_tokens
    charged = done.model_extra["credits"]["charged"]

    pieces, usage = [], None
    stream = gateway.chat.completions.create(
        model=model,
        messages=ask("Hi again"),
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason == "stop":
            charged += chunk.model_extra["credits"]["charged"]
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
    seen["streamed"] = "".join(pieces)
    seen["pieces"] = len(pieces)
    seen["streamed_usage"] = usage
    seen["charged"] = charged

    try:
        gateway.chat.completions.create(model="no-such-flow", messages=ask("Hi"))
        seen["unknown_model"] = "answered"
    except openai.NotFoundError as e:
        seen["unknown_model"] = [e.status_code, e.code, e.type]

    try:
        client(os.environ["POOR_KEY"]).chat.completions.create(model=model, messages=ask("Hi"))
        seen["poor"] = "answered"
    except openai.APIStatusError as e:
        seen["poor"] = [e.status_code, e.code, type(e).__name__]
    return seen


def revoked():
    try:
        client(os.environ["KEY"]).models.list()
        return {"revoked": "answered"}
    except openai.AuthenticationError as e:
        return {"revoked": [e.status_code, e.code]}


if __name__ == "__main__":
    print(json.dumps({"use": use, "revoked": revoked}[sys.argv[1]]()))
