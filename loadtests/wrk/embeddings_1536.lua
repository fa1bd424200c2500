-- Embeddings the size of real ones (1,536 dimensions, ~25 KB an answer); every body differs.
package.path = debug.getinfo(1, "S").source:match("^@?(.*/)") .. "?.lua;" .. package.path
local common = require("common")

common.post("/v1/embeddings")
request = common.varying(
  '{"model": "text-embedding-3-small", "dimensions": 1536, "input": "query ',
  ': best budget laptops for students with long battery life"}'
)
done = common.done
