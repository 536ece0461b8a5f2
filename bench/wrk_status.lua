-- Counts the answers that are not 200 (wrk's own "Non-2xx or 3xx" leaves out redirects,
-- and a redirect to the login page is the one failure that would look like speed).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  not_200 = 0
end

function response(status, headers, body)
  if status ~= 200 then
    not_200 = not_200 + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("not_200")
  end
  io.write(string.format("Not-200 responses: %d\n", total))
end
