-- wrk script: ranged downloads of a published file mixed with hub API calls.
-- Env: LOAD_FILE (storage path), LOAD_SIZE (bytes), LOAD_MODEL (model id),
-- LOAD_VERSION, LOAD_API_SHARE (0..1).
local file = os.getenv("LOAD_FILE")
local size = tonumber(os.getenv("LOAD_SIZE"))
local model = os.getenv("LOAD_MODEL")
local version = os.getenv("LOAD_VERSION")
local api_share = tonumber(os.getenv("LOAD_API_SHARE") or "0.2")
local api = {
  "/api/models",
  "/api/models/" .. model,
  "/api/models/" .. model .. "/versions/" .. version .. "/manifest",
  "/api/model-usage/ranking?limit=10",
  "/api/models?task=asr&language=zh",
}

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

request = function()
  local r = math.random()
  if r < api_share * 0.9 then
    return wrk.format("GET", api[math.random(#api)])
  elseif r < api_share then
    return wrk.format("POST", "/api/model-usage",
      {["Content-Type"] = "application/json"}, '{"model_id": "' .. model .. '"}')
  end
  local len = math.random(16, 512) * 1024
  local start = math.random(0, size - len)
  return wrk.format("GET", file, {["Range"] = "bytes=" .. start .. "-" .. (start + len - 1)})
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "bytes": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
