-- wrk script for bench/run.py: sends pre-generated, signed Twilio status callbacks, each once.
--
-- Arguments (after `--`): the callbacks file (one "sid<TAB>signature<TAB>token<TAB>body" per
-- line), the Host header to send and wrk's thread count; each thread takes every n-th line. The response's
-- X-Request-ID (the callback's sid, echoed by the receiver) names which callbacks got a 2xx,
-- so the database can be checked against exactly those; done() writes a JSON report to the
-- file named by BENCH_REPORT.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

local requests = {}
local position = 0
wrapped = 0
acked = {}
statuses = {}

function init(args)
   local path, host, nthreads = args[1], args[2], tonumber(args[3])
   local i = 0
   for line in io.lines(path) do
      if i % nthreads == id then
         local sid, signature, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         requests[#requests + 1] = "POST /v1/webhook/twilio/sms-status HTTP/1.1\r\n"
            .. "Host: " .. host .. "\r\n"
            .. "Content-Type: application/x-www-form-urlencoded\r\n"
            .. "User-Agent: TwilioProxy/1.1\r\n"
            .. "I-Twilio-Idempotency-Token: " .. token .. "\r\n"
            .. "X-Twilio-Signature: " .. signature .. "\r\n"
            .. "X-Request-ID: " .. sid .. "\r\n"
            .. "Content-Length: " .. #body .. "\r\n\r\n"
            .. body
      end
      i = i + 1
   end
end

function request()
   position = position + 1
   if position > #requests then
      -- Out of fresh callbacks: resend (the receiver records duplicates; the report says so).
      position = 1
      wrapped = wrapped + 1
   end
   return requests[position]
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   if status >= 200 and status < 300 then
      local sid = headers["x-request-id"] or headers["X-Request-ID"]
      if sid then
         acked[#acked + 1] = sid
      end
   end
end

function done(summary, latency, requests)
   local all_statuses, all_acked, all_wrapped = {}, {}, 0
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         all_statuses[status] = (all_statuses[status] or 0) + count
      end
      for _, sid in ipairs(thread:get("acked")) do
         all_acked[#all_acked + 1] = sid
      end
      all_wrapped = all_wrapped + thread:get("wrapped")
   end
   local parts = {}
   for status, count in pairs(all_statuses) do
      parts[#parts + 1] = string.format('"%s": %d', status, count)
   end
   local ids = {}
   for i, sid in ipairs(all_acked) do
      ids[i] = '"' .. sid .. '"'
   end
   local errors = summary.errors
   local out = assert(io.open(os.getenv("BENCH_REPORT"), "w"))
   out:write(string.format(
      '{"duration_us": %d, "requests": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
         .. '"statuses": {%s}, "wrapped": %d, "acked": [%s]}\n',
      summary.duration, summary.requests, latency:percentile(50), latency:percentile(99),
      latency.max, errors.connect, errors.read, errors.write, errors.timeout,
      table.concat(parts, ", "), all_wrapped, table.concat(ids, ", ")))
   out:close()
end
