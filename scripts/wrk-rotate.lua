-- A keep-alive workload that does not repeat itself the way plain `wrk URL` does: each
-- connection rotates over 240 distinct requests (paths, query strings and header sets) against
-- the routes of examples/todos.yaml. Used to judge optimisations that pay only when a client
-- sends the same request head again and again.
--
--   wrk -t1 -c64 -d5s -s scripts/wrk-rotate.lua http://127.0.0.1:8000

local agents = {
  "curl/8.5.0",
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
  "python-requests/2.32.3",
  "Go-http-client/1.1",
}
local accepts = { "*/*", "application/json", "application/json, text/plain;q=0.9", "text/html,*/*;q=0.8" }

local requests = {}
local function add(path, i)
  local headers = {
    ["User-Agent"] = agents[i % #agents + 1],
    ["Accept"] = accepts[math.floor(i / #agents) % #accepts + 1],
    ["X-Request-Id"] = string.format("req-%06d", i),
  }
  if i % 3 == 0 then
    headers["Cookie"] = string.format("session=%08x; theme=dark", i * 2654435761 % 4294967296)
  end
  requests[#requests + 1] = wrk.format("GET", path, headers)
end

local i = 0
for id = 1, 80 do
  add("/todos/" .. id, i); i = i + 1
end
for n = 1, 80 do
  add("/squares?n=" .. (n % 12 + 1) .. "&page=" .. n, i); i = i + 1
end
for n = 1, 80 do
  add("/todos?limit=" .. n .. "&sort=" .. (n % 2 == 0 and "asc" or "desc"), i); i = i + 1
end

local counter = 0
function init(args)
  -- Threads start at different places so they do not send the same sequence in lock step.
  counter = math.random(#requests)
end

function request()
  counter = counter % #requests + 1
  return requests[counter]
end
