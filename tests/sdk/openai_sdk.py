"""Drives Trellis's OpenAI-compatible API with the official `openai` Python SDK.

Usage: python openai_sdk.py <base_url> <api_key> <model>

Lists the models, asks for a whole completion and a streamed one, and names an
unknown model, then prints one JSON object with what the SDK saw, for the Rust
black-box test (tests/blackbox/openai.rs) to check. Any exception the SDK raises
where none is expected fails the script (non-zero exit, traceback on stderr).
"""

import json
import sys

import openai


def main() -> None:
    base_url, api_key, model = sys.argv[1:4]
    # No retries: a failure should show at once, not after back-off.
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    out = {"sdk_version": openai.__version__}

    out["models"] = [m.id for m in client.models.list()]

    messages = [
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "Say hello"},
    ]
    whole = client.chat.completions.create(
        model=model, messages=messages, temperature=0.5, user="sdk-test"
    )
    out["completion"] = {
        "id": whole.id,
        "object": whole.object,
        "model": whole.model,
        "content": whole.choices[0].message.content,
        "role": whole.choices[0].message.role,
        "finish_reason": whole.choices[0].finish_reason,
        "usage": whole.usage.model_dump() if whole.usage else None,
    }

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    content, chunks, finish_reason, usage, role = "", 0, None, None, None
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            role = choice.delta.role or role
            content += choice.delta.content or ""
            finish_reason = choice.finish_reason or finish_reason
    out["stream"] = {
        "content": content,
        "role": role,
        "chunks": chunks,
        "finish_reason": finish_reason,
        "usage": usage,
    }

    try:
        client.chat.completions.create(model="no-such-agent", messages=messages)
        out["unknown_model"] = {"raised": None}
    except openai.NotFoundError as e:
        out["unknown_model"] = {
            "raised": type(e).__name__,
            "status": e.status_code,
            "code": e.code,
            "type": e.type,
            "message": e.message,
        }

    print(json.dumps(out))


if __name__ == "__main__":
    main()
