-- One deterministic chat request (temperature 0), repeated: the body a response cache answers.
-- Until spendgate has a cache this measures the same path as chat.lua with a fixed body.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

common.post("/v1/chat/completions")
wrk.body = '{"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 64, "messages": ['
  .. '{"role": "system", "content": "You are a concise assistant for an internal search team."}, '
  .. '{"role": "user", "content": "What does our query-understanding service do?"}]}'
done = common.done
