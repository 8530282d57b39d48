-- Argo CD health for the four bertops kinds (BertDataset, BertTraining, BertModel,
-- BertDeployment): one script, registered once per kind in argocd-cm as
-- resource.customizations.health.bertops.io_<Kind>. It reads only what the operator
-- writes (status.observedGeneration and status.conditions; reasons from bertops.api) and
-- returns Healthy, Progressing, Degraded or Suspended with the condition's message.
-- Unit-tested with lupa in tests/gitops/test_health_lua.py.
local hs = {}

-- Reasons under which a False/Unknown main condition means "still working".
local WORKING = {
  Preparing = true, Retrying = true, Training = true, WaitingForDataset = true,
  WaitingForTraining = true, WaitingForParent = true, Compressing = true,
  Evaluating = true, ParentNotFound = true, TrainingNotFound = true,
  DatasetNotFound = true, NoModelSelected = true, ServersStarting = true,
}
local MAIN = {
  BertDataset = "Ready", BertTraining = "Succeeded", BertModel = "Ready",
  BertDeployment = "Ready",
}

local function condition(conditions, type_)
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function say(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.message
  if text == nil or text == "" then
    text = fallback
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason .. ": " .. text
  end
  return text
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.conditions == nil or #status.conditions == 0 then
  return result("Progressing", "waiting for the bertops operator to report status")
end
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  return result("Progressing", "waiting for the operator to observe generation " .. generation)
end
local conditions = status.conditions
local main = condition(conditions, MAIN[obj.kind] or "Ready")

if obj.kind == "BertDeployment" then
  local degraded = condition(conditions, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    return result("Degraded", say(degraded, "degraded"))
  end
  local progressing = condition(conditions, "Progressing")
  if progressing ~= nil and progressing.reason == "RolloutPaused" then
    return result("Suspended", say(progressing, "rollout paused"))
  end
  -- A step held past rollout.progressDeadlineSeconds needs a person, as in Argo Rollouts.
  if progressing ~= nil and progressing.reason == "ProgressDeadlineExceeded" then
    return result("Degraded", say(progressing, "rollout stuck"))
  end
  -- A new model scored offline against stable before any traffic is still a rollout.
  if progressing ~= nil and progressing.reason == "OfflineEvaluation" then
    return result("Progressing", say(progressing, "offline evaluation"))
  end
  if main ~= nil and main.status == "True" then
    if progressing ~= nil and progressing.status == "True" then
      return result("Progressing", say(progressing, "rollout in progress"))
    end
    local drifted = condition(conditions, "Drifted")
    if drifted ~= nil and drifted.status == "True" then
      return result("Healthy", say(main, "serving") .. "; " .. say(drifted, "drift detected"))
    end
    return result("Healthy", say(main, "serving"))
  end
  if progressing ~= nil and progressing.status == "True" then
    return result("Progressing", say(progressing, "rollout in progress"))
  end
end

if main == nil then
  return result("Progressing", "waiting for the operator to set " .. (MAIN[obj.kind] or "Ready"))
end
if main.status == "True" then
  return result("Healthy", say(main, main.type))
end
if main.status == "False" and not WORKING[main.reason or ""] then
  return result("Degraded", say(main, main.type .. " is False"))
end
return result("Progressing", say(main, "in progress"))
