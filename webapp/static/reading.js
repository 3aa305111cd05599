// Reading a batch by keyboard: j / k move to the next / previous film, ? shows the shortcut list.
// Keys typed into a form field are left alone; the film viewer handles its own keys first; a
// checkbox in the shortcut list turns these keys off.
(function () {
  "use strict";
  const cards = Array.from(document.querySelectorAll("article.result"));
  const shortcuts = document.getElementById("shortcuts");
  // The page keys can be turned off (WCAG 2.1.4: speech input and stray key presses); the choice
  // stays in this browser.
  const OFF_KEY = "cxr-page-keys-off";
  const pageKeys = document.getElementById("page-keys");
  let keysOn = true;
  try {
    keysOn = localStorage.getItem(OFF_KEY) !== "true";
  } catch (ignored) {
    // storage refused (a locked-down profile): the keys stay on for this page
  }
  if (pageKeys) {
    pageKeys.checked = keysOn;
    pageKeys.addEventListener("change", () => {
      keysOn = pageKeys.checked;
      try {
        if (keysOn) localStorage.removeItem(OFF_KEY);
        else localStorage.setItem(OFF_KEY, "true");
      } catch (ignored) {
        // not remembered, but still off on this page
      }
    });
  }

  function current() {
    const focused = document.activeElement && document.activeElement.closest("article.result");
    if (focused) return cards.indexOf(focused);
    // Otherwise the first card whose top is on screen, or the last one above it.
    const index = cards.findIndex((card) => card.getBoundingClientRect().top >= -1);
    return index === -1 ? cards.length - 1 : index - (cards[index].getBoundingClientRect().top > 1 ? 1 : 0);
  }

  function go(step) {
    if (!cards.length) return;
    const index = clampIndex(current() + step);
    const card = cards[index];
    card.scrollIntoView({ block: "start" });
    // Focus the film itself: its zoom and window keys work at once.
    (card.querySelector(".pane-film") || card).focus({ preventScroll: true });
    history.replaceState(null, "", "#" + card.id);
  }

  function clampIndex(index) {
    return Math.min(cards.length - 1, Math.max(0, index));
  }

  // After a save the page opens at the film's saved-reading line (#review-N), which takes the focus so a
  // screen reader confirms what was saved; the reader sees the film's card from its top, as j/k show it.
  const saved = location.hash.startsWith("#review-") && document.getElementById(location.hash.slice(1));
  const savedCard = saved && saved.closest("article.result");
  if (savedCard) {
    window.addEventListener("load", () => {
      saved.focus({ preventScroll: true });
      savedCard.scrollIntoView({ block: "start" });
    });
  }

  document.addEventListener("keydown", (event) => {
    if (!keysOn || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, select, textarea, [contenteditable]")) return;
    if (event.key === "j") go(1);
    else if (event.key === "k") go(-1);
    else if (event.key === "?" && shortcuts) {
      shortcuts.open = !shortcuts.open;
      if (shortcuts.open) shortcuts.querySelector("summary").focus();
    } else return;
    event.preventDefault();
  });
})();
