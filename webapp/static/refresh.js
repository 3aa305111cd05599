// A page that reloads itself (<meta http-equiv="refresh">, kept for browsers without script): each
// reload dropped the keyboard focus to the top of the document, so a keyboard or screen-reader user
// reading the worklist was sent back to the skip link every 30 s, and the first reload (to the
// address with auto_refresh=1, a new address to the browser) scrolled the page back to the top.
// Before the reload the scroll position and the focused control are remembered (for this tab
// only); after it, the page scrolls back and the same control (same link address, id, or place
// among the keyboard stops) takes the focus again. Only a timed reload (auto_refresh=1) of the same
// page restores them.
(function () {
  "use strict";
  const KEY = "refresh-focus";
  const STOPS = "a[href], button, input, select, textarea, [tabindex]";

  function describe(el) {
    if (el.id) return { id: el.id };
    if (el.matches("a[href]")) return { href: el.getAttribute("href") };
    return { index: Array.from(document.querySelectorAll(STOPS)).indexOf(el) };
  }

  function find(saved) {
    if (saved.id) return document.getElementById(saved.id);
    if (saved.href) {
      return Array.from(document.querySelectorAll("a[href]")).find(function (a) {
        return a.getAttribute("href") === saved.href;
      });
    }
    return document.querySelectorAll(STOPS)[saved.index];
  }

  window.addEventListener("pagehide", function () {
    const el = document.activeElement;
    const focused = el && el !== document.body && el !== document.documentElement;
    sessionStorage.setItem(KEY, JSON.stringify({
      path: location.pathname, x: window.scrollX, y: window.scrollY, target: focused ? describe(el) : null
    }));
  });

  const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
  sessionStorage.removeItem(KEY);
  const timed = new URLSearchParams(location.search).get("auto_refresh") === "1";
  if (!saved || !timed || saved.path !== location.pathname) return;
  window.scrollTo(saved.x, saved.y);
  const el = saved.target && find(saved.target);
  if (el && document.activeElement !== el) el.focus({ preventScroll: true });
}());
