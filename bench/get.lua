-- wrk script for bench/run.py --get-messages: GET /v1/messages/{sid} for random stored messages.
--
-- Arguments (after `--`): how many messages bench/fill.py stored, its multiplier and its sid
-- suffix. Message i's sid is SM + 8 hex digits of (i * multiplier) mod 2^32 + the suffix, as
-- bench/fill.py's sid_for(i) makes it. done() writes a JSON report to the file named by
-- BENCH_REPORT.

local count, multiplier_hi, multiplier_lo, suffix
statuses = {}

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   count = tonumber(args[1])
   local multiplier = tonumber(args[2])
   multiplier_hi, multiplier_lo = math.floor(multiplier / 65536), multiplier % 65536
   suffix = args[3]
   math.randomseed(os.time() * 1000 + id)
end

-- (i * multiplier) mod 2^32 in 16-bit halves: every product stays exact in a double.
local function scramble(i)
   local hi, lo = math.floor(i / 65536), i % 65536
   local low = lo * multiplier_lo
   local mid = (hi * multiplier_lo + lo * multiplier_hi) % 65536
   return (low + mid * 65536) % 4294967296
end

function request()
   local v = scramble(math.random(0, count - 1))
   local sid = string.format("SM%04x%04x%s", math.floor(v / 65536), v % 65536, suffix)
   return wrk.format("GET", "/v1/messages/" .. sid)
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
   local all = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         all[status] = (all[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(all) do
      parts[#parts + 1] = string.format('"%s": %d', status, n)
   end
   local errors = summary.errors
   local out = assert(io.open(os.getenv("BENCH_REPORT"), "w"))
   out:write(string.format(
      '{"duration_us": %d, "requests": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
         .. '"statuses": {%s}}\n',
      summary.duration, summary.requests, latency:percentile(50), latency:percentile(99),
      latency.max, errors.connect, errors.read, errors.write, errors.timeout,
      table.concat(parts, ", ")))
   out:close()
end
