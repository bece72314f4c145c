"""Talks to a running `lathe serve` with the official `openai` client and prints what it saw as JSON.

Usage: python openai_client.py <base_url> <api_key> <prompt> <max_tokens>
The TS test (src/serve/server.test.ts) compares the greedy texts with `lathe generate` and checks the
rest. Every request here is a real HTTP request made by the openai package.
"""
import json
import sys
import threading

import openai

url, key, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
out = {'openai': openai.__version__}

models = client.models.list()
model = models.data[0].id
out['models'] = [m.id for m in models.data]

# Completions: greedy, non-streaming and streaming.
c = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
out['completion'] = {'text': c.choices[0].text, 'finish': c.choices[0].finish_reason,
                     'usage': c.usage.model_dump(), 'object': c.object}
parts, finishes, usage = [], [], None
for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                       stream=True):
    for ch in chunk.choices:
        parts.append(ch.text)
        if ch.finish_reason:
            finishes.append(ch.finish_reason)
    if chunk.usage:
        usage = chunk.usage.model_dump()
out['completion_stream'] = {'text': ''.join(parts), 'chunks': len(parts), 'finishes': finishes, 'usage': usage}

# Chat: the chat template, greedy, non-streaming and streaming (with stream_options.include_usage).
messages = [{'role': 'system', 'content': 'Tally.'}, {'role': 'user', 'content': 'let px = 4'}]
ch = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
out['chat'] = {'text': ch.choices[0].message.content, 'role': ch.choices[0].message.role,
               'finish': ch.choices[0].finish_reason, 'usage': ch.usage.model_dump(), 'object': ch.object}
parts, roles, finishes, usage, empty = [], [], [], None, 0
for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0,
                                            stream=True, stream_options={'include_usage': True}):
    if not chunk.choices:
        empty += 1
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finishes.append(c.finish_reason)
    if chunk.usage:
        usage = chunk.usage.model_dump()
out['chat_stream'] = {'text': ''.join(parts), 'roles': roles, 'finishes': finishes, 'usage': usage,
                      'usage_chunks': empty}

# n, seed, temperature, top_p and stop.
s1 = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=1.0, top_p=0.9,
                               seed=7, n=3)
s2 = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=1.0, top_p=0.9,
                               seed=7, n=3)
out['sampled'] = {'a': [x.text for x in s1.choices], 'b': [x.text for x in s2.choices],
                  'index': [x.index for x in s1.choices], 'usage': s1.usage.model_dump()}
st = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stop=['\n'])
out['stopped'] = {'text': st.choices[0].text, 'finish': st.choices[0].finish_reason}
batch = client.completions.create(model=model, prompt=[prompt, 'let qty = '], max_tokens=8, temperature=0)
out['batch_prompts'] = [x.index for x in batch.choices]

# Eight clients at once: every answer equals the one it gets alone (sampled with its own seed, so the
# answers differ and a row given another's logits or cache would show).
def ask(i):
    return client.completions.create(model=model, prompt=f'let x{i} = ', max_tokens=max_tokens, temperature=1.0,
                                     seed=100 + i).choices[0].text


alone = [ask(i) for i in range(8)]
together = [None] * 8


def ask_into(i):
    together[i] = ask(i)


threads = [threading.Thread(target=ask_into, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out['concurrent'] = {'alone': alone, 'together': together}


# Errors come back as the client's typed exceptions, with OpenAI's body.
def error_of(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {'class': type(e).__name__, 'status': e.status_code, 'param': body.get('param'),
                'code': body.get('code'), 'message': body.get('message')}
    return None


long_prompt = 'let px = 1\n' * 200
out['errors'] = {
    'model': error_of(lambda: client.completions.create(model='nope', prompt='x', max_tokens=2)),
    'temperature': error_of(lambda: client.completions.create(model=model, prompt='x', max_tokens=2, temperature=5)),
    'max_tokens': error_of(lambda: client.completions.create(model=model, prompt='x', max_tokens=0)),
    'context': error_of(lambda: client.completions.create(model=model, prompt=long_prompt, max_tokens=2)),
    'context_chat': error_of(lambda: client.chat.completions.create(
        model=model, messages=[{'role': 'user', 'content': long_prompt}], max_tokens=2)),
    'budget': error_of(lambda: client.completions.create(model=model, prompt='x', max_tokens=100000)),
    'role': error_of(lambda: client.chat.completions.create(
        model=model, messages=[{'role': 'wizard', 'content': 'x'}], max_tokens=2)),
    'unknown': error_of(lambda: client.completions.create(model=model, prompt='x', max_tokens=2,
                                                          extra_body={'beam_width': 4})),
    'penalty': error_of(lambda: client.completions.create(model=model, prompt='x', max_tokens=2,
                                                          presence_penalty=1.0)),
    'auth': error_of(lambda: openai.OpenAI(base_url=url, api_key='wrong-key-0123456789', max_retries=0)
                     .models.list()),
}
print(json.dumps(out))
