-- Streaming chat completion (`stream: true`, server-sent events); every body differs.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

common.post("/v1/chat/completions")
request = common.varying(
  '{"model": "gpt-4o-mini", "stream": true, "temperature": 0.7, "max_tokens": 64, "messages": ['
    .. '{"role": "system", "content": "You are a concise assistant for an internal search team."}, '
    .. '{"role": "user", "content": "Summarise the ranking changes in release ',
  ' in two sentences, mentioning click-through rate and latency."}]}'
)
done = common.done
