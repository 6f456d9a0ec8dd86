/* avatarkit widget: add the avatar chat to any page with one tag,
 *
 *   <script src="https://chat.example.com/widget.js" async
 *           data-label="Ask our avatar" data-color="#5b5bd6" data-position="right"></script>
 *
 * It draws a floating button; the chat itself opens in an iframe served by the avatarkit
 * server, so the conversation, its cookie and any key stay with that server. Styles are set
 * through the CSSOM (no inline <style>), so a strict CSP on the host page does not break it.
 * Options (all optional): data-label, data-color (#rgb or #rrggbb), data-position
 * (right|left), data-open ("true": start open), data-width, data-height (pixels). */
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || window.__avatarkitWidget) return;
  window.__avatarkitWidget = true;
  const opts = script.dataset;
  const origin = new URL(".", script.src);
  const color = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(opts.color || "") ? opts.color : "#5b5bd6";
  const side = opts.position === "left" ? "left" : "right";
  const label = (opts.label || "Chat with the avatar").slice(0, 60);
  const px = (value, fallback, lo, hi) => {
    const n = Number.parseInt(value || "", 10);
    return `${Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : fallback}px`;
  };
  const width = px(opts.width, 380, 280, 720);
  const height = px(opts.height, 600, 360, 1000);

  const css = (el, styles) => { for (const [k, v] of Object.entries(styles)) el.style.setProperty(k, v); return el; };

  const button = css(document.createElement("button"), {
    position: "fixed", bottom: "20px", [side]: "20px", "z-index": "2147483646",
    height: "56px", "min-width": "56px", padding: "0 20px", border: "0", "border-radius": "28px",
    background: color, color: "#fff", font: "600 15px system-ui, sans-serif", cursor: "pointer",
    "box-shadow": "0 8px 24px rgba(0,0,0,.25)", display: "flex", "align-items": "center", gap: "8px",
  });
  button.type = "button";
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-label", label);
  const ns = "http://www.w3.org/2000/svg";
  const icon = document.createElementNS(ns, "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("width", "22");
  icon.setAttribute("height", "22");
  icon.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z");
  icon.append(path);
  const text = document.createElement("span");
  text.textContent = label;
  button.append(icon, text);

  let panel = null;
  function open() {
    if (!panel) {
      panel = css(document.createElement("iframe"), {
        position: "fixed", bottom: "88px", [side]: "20px", "z-index": "2147483647",
        width, height, "max-width": "calc(100vw - 40px)", "max-height": "calc(100vh - 110px)",
        border: "0", "border-radius": "16px", background: "#fff",
        "box-shadow": "0 20px 60px rgba(0,0,0,.3)",
      });
      panel.src = `${new URL("embed", origin).href}#accent=${color.slice(1)}`;
      panel.title = label;
      panel.allow = "autoplay; microphone";
      panel.referrerPolicy = "no-referrer";
      document.body.append(panel);
    }
    panel.style.setProperty("display", "block");
    button.setAttribute("aria-expanded", "true");
  }
  function close() {
    if (panel) panel.style.setProperty("display", "none");
    button.setAttribute("aria-expanded", "false");
  }
  button.addEventListener("click", () => {
    if (button.getAttribute("aria-expanded") === "true") close(); else open();
  });

  const mount = () => { document.body.append(button); if (opts.open === "true") open(); };
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
  window.avatarkitWidget = { open, close };
})();
