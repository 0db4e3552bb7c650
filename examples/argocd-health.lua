-- Argo CD health check for mlcanary.io/ModelDeployment.
-- Install it as resource.customizations.health.mlcanary.io_ModelDeployment in argocd-cm (docs/gitops.md).
-- Tested by tests/chart/test_argocd_health.py against recorded statuses.
--
--   Degraded     the last canary was rolled back (phase RolledBack), or the spec is invalid (SpecValid
--                False); cleared by rolling forward to another version or the mlcanary.io/retry annotation
--   Suspended    the rollout is paused: spec.rollout.paused is true, or the operator still reports
--                phase Paused for the current generation
--   Healthy      phase Healthy and the operator has observed the current generation
--   Progressing  everything else: first deploy, canary steps, promotion, rollback in flight, or a
--                generation the operator has not acted on yet
local hs = {}

local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function message(default)
  if obj.status ~= nil and obj.status.message ~= nil and obj.status.message ~= "" then
    return obj.status.message
  end
  return default
end

local generation = obj.metadata.generation
local status = obj.status
if status == nil or status.phase == nil then
  local specValid = condition("SpecValid")
  if specValid ~= nil and specValid.status == "False" then
    hs.status = "Degraded"
    hs.message = "Invalid spec: " .. (specValid.message or "")
    return hs
  end
  hs.status = "Progressing"
  hs.message = "Waiting for the mlcanary operator to pick up this ModelDeployment"
  return hs
end

local observed = status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration == generation
local paused = obj.spec ~= nil and obj.spec.rollout ~= nil and obj.spec.rollout.paused == true

-- An invalid spec leaves observedGeneration behind on purpose, so check it before the generation.
local specValid = condition("SpecValid")
if specValid ~= nil and specValid.status == "False" then
  if specValid.observedGeneration == nil or generation == nil or specValid.observedGeneration == generation then
    hs.status = "Degraded"
    hs.message = "Invalid spec: " .. (specValid.message or "")
    return hs
  end
end

if status.phase == "RolledBack" and observed then
  hs.status = "Degraded"
  hs.message = message("The canary was rolled back; the stable version serves all traffic")
  return hs
end

if paused or (status.phase == "Paused" and observed) then
  hs.status = "Suspended"
  hs.message = message("Rollout paused (spec.rollout.paused)")
  return hs
end

if not observed then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

if status.phase == "Healthy" then
  hs.status = "Healthy"
  hs.message = message("Serving " .. tostring(status.stableVersion))
  return hs
end

hs.status = "Progressing"
hs.message = message(status.phase)
return hs
