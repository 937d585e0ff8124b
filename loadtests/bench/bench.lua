-- Unique ~1 KiB PUCOMEX bodies; records the id of every 200 so the store can be checked by id.
local run = os.getenv("BENCH_RUN") or "run"
local token = os.getenv("BENCH_TOKEN") or ""
local out = os.getenv("BENCH_OUT") or "/dev/null"
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "1024")
-- As the Portal sends them: the event in event-type, the secret in `secret`, no Authorization.
local portal = os.getenv("BENCH_PORTAL_HEADERS") == "1"
local threads = {}
local counter = 0
oks = 0
statuses = {}
answers = {}
pending = {}
held = 0

local events = {"duimp.registro", "duimp.retificacao", "duimp.desembaraco",
                "pcce.icms-solicitacao", "lpco.situacao-anuente", "duimp.entrega-com-prosseguimento"}
local template = '{"evento":"%s","dataHora":"2026-05-11T09:%02d:%02d-03:00","dados":{"numero":"26BR%s%08d",' ..
  '"versao":%d,"situacao":"REGISTRADA","importador":{"ni":"12345678000190","nome":"Importadora Exemplo Ltda"},' ..
  '"unidadeDespacho":"0817600","recintoAduaneiro":"8911101","canal":"VERDE","bench":"%s-%02d-%08d","obs":"%s"}}'
local pad = ""
local heads = {}  -- per event: the request line and headers, its bodies all being one length

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  tid = tid or 1  -- set by setup(): each thread's bodies differ from the others'
  local probe = string.format(template, events[6], 0, 0, "00", 0, 1, run, tid, 0, "")
  local n = size - #probe
  if n < 0 then n = 0 end
  pad = string.rep("x", n)
  -- Made once, not by wrk.format on every request: the generator's CPU is taken from the
  -- processes it measures. Every field of a body has a fixed width (up to 10^8 requests per
  -- thread), so its length is known.
  for i, event in ipairs(events) do
    local body = string.format(template, event, 0, 0, "00", 0, 1, run, tid, 0, pad)
    local credentials = "\r\nAuthorization: Bearer " .. token
    if portal then credentials = "\r\nevent-type: " .. event .. "\r\nsecret: " .. token end
    heads[i] = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
      "\r\nContent-Type: application/json" .. credentials ..
      "\r\nContent-Length: " .. #body .. "\r\n\r\n"
  end
end

function request()
  counter = counter + 1
  local index = (counter % #events) + 1
  return heads[index] .. string.format(template, events[index], counter % 60, counter % 60,
    string.format("%02d", tid), counter, (counter % 3) + 1, run, tid, counter, pad)
end

-- The body of every 200, for the store check by id (Python reads the ids out). Kept as it came
-- and joined a thousand at a time: a pattern match per answer and a table of one string per
-- answer (150,000 in a 10 s run) took wrk CPU from the processes it measures; on two cores the
-- receiver answered 11% more without them (bench --rounds 3: 14,284 -> 15,844 req/s).
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 then
    oks = oks + 1
    held = held + 1
    pending[held] = body
    if held == 1000 then
      answers[#answers + 1] = table.concat(pending, "\n")
      pending, held = {}, 0
    end
  end
end

function done(summary, latency, requests)
  local f = assert(io.open(out, "w"))
  local total_ok = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    for _, chunk in ipairs(thread:get("answers")) do f:write(chunk, "\n") end
    for _, body in ipairs(thread:get("pending")) do f:write(body, "\n") end
    total_ok = total_ok + thread:get("oks")
    local st = thread:get("statuses")
    for k, v in pairs(st) do merged[tostring(k)] = (merged[tostring(k)] or 0) + v end
  end
  f:close()
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"ok":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration, total_ok, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout, table.concat(parts, ",")))
end
