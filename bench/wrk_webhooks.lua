-- Signed Jira deliveries for bench/webhooks.py. Arguments after `--`: the data file
-- bench.webhooks.write_script_data wrote (kind, prefix, headers, bodies, replays) and
-- the status every answer must have.
-- fresh and forged: a new X-Atlassian-Webhook-Identifier per request (prefix-thread-n),
-- bodies in turn; duplicate: the (identifier, body) pairs of deliveries already stored.
-- Also prints "Not-200 responses" for bench.load.parse_wrk.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  dofile(args[1])
  expected_status = tonumber(args[2])
  sent, expected, unexpected, stored, not_200 = 0, 0, 0, 0, 0
  -- Threads start at different bodies so that they do not hit the same site together.
  offset = (tid - 1) * 7919
end

function request()
  sent = sent + 1
  local identifier, body
  if kind == "duplicate" then
    local replay = replays[(offset + sent) % #replays + 1]
    identifier, body = replay[1], bodies[replay[2]]
  else
    identifier = prefix .. "-" .. tid .. "-" .. sent
    body = bodies[(offset + sent) % #bodies + 1]
  end
  local request_headers = {}
  for name, value in pairs(headers) do
    request_headers[name] = value
  end
  request_headers["X-Atlassian-Webhook-Identifier"] = identifier
  return wrk.format("POST", nil, request_headers, body)
end

function response(status, response_headers, body)
  if status == expected_status then
    expected = expected + 1
  else
    unexpected = unexpected + 1
  end
  if status ~= 200 then
    not_200 = not_200 + 1
  end
  if body == "stored" then
    stored = stored + 1
  end
end

function done(summary, latency, requests)
  local totals = { sent = 0, expected = 0, unexpected = 0, stored = 0, not_200 = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
  end
  io.write(string.format("Not-200 responses: %d\n", totals.not_200))
  io.write(string.format(
    "Webhook answers: sent %d, expected %d, unexpected %d, stored %d\n",
    totals.sent, totals.expected, totals.unexpected, totals.stored
  ))
end
