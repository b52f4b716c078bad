// The console's only script: live hits by server-sent events and decisions without a page reload.
// Pages work without it (plain forms); the server renders every fragment, so text is escaped there.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf || "";

  async function post(form, submitter) {
    const body = new FormData(form);
    if (submitter && submitter.name) body.set(submitter.name, submitter.value);
    const resp = await fetch(form.action, {
      method: "POST", body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "X-Requested-With": "fetch" },
    });
    return resp;
  }

  function wire(root) {
    root.querySelectorAll("form.decide").forEach((form) => {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const card = form.closest("article.hit");
        form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
        const resp = await post(form, ev.submitter);
        if (resp.ok) {
          const tpl = document.createElement("template");
          tpl.innerHTML = (await resp.text()).trim();
          const fresh = tpl.content.firstElementChild;
          card.replaceWith(fresh);
          wire(fresh);
        } else {
          form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
          alert("Not recorded: " + (await resp.text()));
        }
      });
    });
  }

  async function addCard(eventId) {
    const list = document.getElementById("hits");
    if (!list || document.getElementById("hit-" + eventId)) return;
    const resp = await fetch("/hits/" + encodeURIComponent(eventId) + "/card", { credentials: "same-origin" });
    if (!resp.ok) return;
    const tpl = document.createElement("template");
    tpl.innerHTML = (await resp.text()).trim();
    const card = tpl.content.firstElementChild;
    if (!card || document.getElementById(card.id)) return;
    card.classList.add("fresh");
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
    list.prepend(card);
    wire(card);
    const live = document.getElementById("live");
    live.textContent = "New hit at " + new Date().toLocaleTimeString();
    live.classList.add("flash");
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire(document);
    const live = document.getElementById("live");
    if (live && window.EventSource) {
      const source = new EventSource(live.dataset.events);
      source.addEventListener("hit", (ev) => { addCard(JSON.parse(ev.data).event_id); });
      source.addEventListener("open", () => { live.dataset.connected = "1"; });
      source.addEventListener("error", () => { live.dataset.connected = "0"; });
    }
  });
})();
