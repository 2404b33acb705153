-- Runs the Argo CD health checks of docs/operator/argocd.md against sample objects, and checks
-- that the doc shows each script exactly as kept here. Run from this directory: lua5.4
-- health_test.lua. Each script gets only what Argo CD's sandbox offers it: `obj` and the base
-- functions it uses.

local function read(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("a")
  f:close()
  return text
end

local function health(script, object)
  local env = { obj = object, ipairs = ipairs, tostring = tostring }
  local chunk = assert(load(script, "health", "t", env))
  return chunk()
end

local function cond(kind, status, generation, message)
  return { type = kind, status = status, observedGeneration = generation, message = message }
end

local function object(generation, spec, conditions, observed)
  return {
    metadata = { name = "x", generation = generation },
    spec = spec,
    status = conditions and { observedGeneration = observed, conditions = conditions } or nil,
  }
end

-- Cases that hold for every kind: { name, object, expected status, text in the message }.
local common = {
  { "no status yet", object(1, {}, nil), "Progressing", "generation 1" },
  { "ready and current", object(2, {}, { cond("Ready", "True", 2, "stored version 3") }), "Healthy", "stored version 3" },
  { "ready but about an older generation", object(3, {}, { cond("Ready", "True", 2) }), "Progressing", "generation 3" },
  { "observedGeneration only on the status", object(4, {}, { cond("Ready", "True") }, 4), "Healthy", "Ready" },
  { "degraded", object(1, {}, { cond("Ready", "False", 1), cond("Degraded", "True", 1, "Nexus unreachable") }), "Degraded", "Nexus unreachable" },
  { "a stale degraded while the operator catches up", object(2, {}, { cond("Ready", "False", 1), cond("Degraded", "True", 1) }), "Progressing", "generation 2" },
  { "progressing", object(1, {}, { cond("Ready", "False", 1), cond("Progressing", "True", 1, "applying") }), "Progressing", "applying" },
  { "not ready, nothing else said", object(1, {}, { cond("Ready", "False", 1, "refused: path outside k8s/a/") }), "Progressing", "refused" },
  { "degraded condition false", object(1, {}, { cond("Ready", "True", 1), cond("Degraded", "False", 1) }), "Healthy", "Ready" },
  { "paused wins over everything", object(1, { paused = true }, { cond("Degraded", "True", 1) }), "Suspended", "paused" },
}

-- Cases of one kind only.
local only = {
  spikecluster = {
    { "sealed", object(1, {}, { cond("Ready", "False", 1), cond("Sealed", "True", 1, "1 of 2 shares") }), "Progressing", "Sealed: 1 of 2 shares" },
    { "unsealed and ready", object(1, {}, { cond("Ready", "True", 1), cond("Sealed", "False", 1), cond("Bootstrapped", "True", 1) }), "Healthy", "Ready" },
  },
  spikesecret = {},
  spikepolicy = {},
}

local doc = read("../argocd.md")
local failures, passed = 0, 0
for kind, cases in pairs(only) do
  local script = read("health-" .. kind .. ".lua")
  if not doc:find("```lua\n" .. script .. "```", 1, true) then
    failures = failures + 1
    print("FAIL health-" .. kind .. ".lua: ../argocd.md does not show it verbatim in a ```lua block")
  end
  local all = {}
  for _, c in ipairs(common) do all[#all + 1] = c end
  for _, c in ipairs(cases) do all[#all + 1] = c end
  for _, c in ipairs(all) do
    local name, o, status, text = c[1], c[2], c[3], c[4]
    local got = health(script, o)
    if got.status == status and got.message:find(text, 1, true) then
      passed = passed + 1
    else
      failures = failures + 1
      print(string.format("FAIL %s, %s: want %s (%q), got %s (%q)", kind, name, status, text, got.status, got.message))
    end
  end
end
print(string.format("%d passed, %d failed", passed, failures))
os.exit(failures == 0)
