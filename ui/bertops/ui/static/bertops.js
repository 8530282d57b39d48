// bertops ui: the one script, shipped in the wheel and served by the app (no build step).
// Every action asks for confirmation first, then calls the JSON API with the
// X-Bertops-Confirm header (the server refuses cookie-authenticated changes without it).
// Elements with data-poll refresh their data-field children from the JSON API.
"use strict";

function say(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
}

async function act(button) {
  if (!window.confirm(button.dataset.confirm)) return;
  const url = button.dataset.url;
  if (button.dataset.action === "download") {
    window.location.href = url;
    say("Download started: the artifact is verified against its manifest.", false);
    return;
  }
  const method = button.dataset.action === "delete" ? "DELETE" : "POST";
  const response = await fetch(url, {
    method: method, credentials: "same-origin", headers: {"X-Bertops-Confirm": "yes"},
  });
  let body = {};
  try { body = await response.json(); } catch (e) { body = {error: response.statusText}; }
  if (!response.ok) {
    say("Refused (" + response.status + "): " + (body.error || response.statusText), true);
  } else if (method === "DELETE") {
    say("Deleted " + body.deleted + ".", false);
  } else {
    say("Requested: " + body.annotation + " (the operator applies it on its next pass).", false);
  }
}

async function poll(element) {
  try {
    const response = await fetch(element.dataset.poll, {credentials: "same-origin"});
    if (!response.ok) return;
    const data = await response.json();
    data.progressingMessage = (data.progressing || {}).message;
    element.querySelectorAll("[data-field]").forEach((field) => {
      const value = data[field.dataset.field];
      const text = value === null || value === undefined ? "" : String(value);
      if (field.textContent !== text) field.textContent = text;  // keeps links while unchanged
    });
    const bar = element.querySelector("svg.weight rect.canary");
    if (bar) {
      const weight = Math.max(0, Math.min(100, Number(data.canaryWeight) || 0));
      bar.setAttribute("width", String(3 * weight));
    }
  } catch (e) { /* the next poll tries again */ }
}

document.addEventListener("DOMContentLoaded", () => {
  const writes = document.body.dataset.writes === "true";
  document.querySelectorAll("button[data-action]").forEach((button) => {
    if (!writes && button.dataset.action !== "download") {
      button.disabled = true;  // the server refuses it anyway (403); say so up front
      button.title = "read-only: start bertops ui with --allow-writes";
    }
    button.addEventListener("click", () => act(button));
  });
  document.querySelectorAll("[data-poll]").forEach((element) => {
    const every = Number(element.dataset.every) || 2000;
    window.setInterval(() => poll(element), every);
  });
});
