-- Argo CD health of a SpikeCluster (spike.spiffe.io/v1alpha1). Argo CD runs each kind's script on
-- its own, with the object in `obj`, so every script carries the little it needs.
local function condition(o, kind)
  if o.status == nil or o.status.conditions == nil then return nil end
  for _, c in ipairs(o.status.conditions) do
    if c.type == kind then return c end
  end
  return nil
end

if obj.spec ~= nil and obj.spec.paused == true then
  return { status = "Suspended", message = "spec.paused is true: the operator leaves it alone" }
end

-- A status about an older generation says nothing about the current spec.
local ready = condition(obj, "Ready")
local generation = obj.metadata and obj.metadata.generation
local observed = ready and ready.observedGeneration
if observed == nil and obj.status ~= nil then observed = obj.status.observedGeneration end
if generation ~= nil and observed ~= generation then
  return { status = "Progressing", message = "waiting for the operator to reconcile generation " .. tostring(generation) }
end

local degraded = condition(obj, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  return { status = "Degraded", message = degraded.message or "Degraded" }
end

-- A cluster whose Nexus is sealed serves nothing until enough keepers hold their shares.
local sealed = condition(obj, "Sealed")
if sealed ~= nil and sealed.status == "True" then
  return { status = "Progressing", message = "Sealed: " .. (sealed.message or "waiting for keepers") }
end

if ready ~= nil and ready.status == "True" then
  return { status = "Healthy", message = ready.message or "Ready" }
end

local progressing = condition(obj, "Progressing")
if progressing ~= nil and progressing.status == "True" then
  return { status = "Progressing", message = progressing.message or "Progressing" }
end
return { status = "Progressing", message = (ready and ready.message) or "waiting for the Ready condition" }
