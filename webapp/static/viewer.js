// Film viewer: zoom and pan through the vendored Panzoom (wheel, drag, pinch), window/level and
// invert through an SVG colour-transfer filter on the film (exact and linear, no pixel loop in
// script), heat-map opacity and a side-by-side pane that mirrors the left one's zoom and pan.
// Without this script the film and its heat map still show, fitted to the frame (the heat map
// then lines up with the film only when the film is square).
(function () {
  "use strict";
  const PAN_STEP = 40; // screen pixels per arrow key press
  const WL_STEP = 0.02; // share of the grey range per Shift+arrow press

  function clamp(value, low, high) {
    return Math.min(high, Math.max(low, value));
  }

  // The stages take the film's proportions and fit their pane, so the heat-map layer (the whole
  // film, like the model's input) lies exactly on the film at every zoom. One observer for every
  // pane on the page: it hands over each pane's size after layout, so fitting twenty films reads
  // no layout and forces no reflow; it also refits when a pane appears (side by side) or resizes.
  const aspects = new WeakMap();
  const fitting = new ResizeObserver((entries) => {
    for (const { target, contentRect } of entries) {
      const { width, height } = contentRect;
      if (!width || !height) continue;
      const aspect = aspects.get(target);
      const wide = width / height > aspect;
      target.firstElementChild.style.width = (wide ? height * aspect : width) + "px";
      target.firstElementChild.style.height = (wide ? height : width / aspect) + "px";
    }
  });

  // The tool strip follows the WAI-ARIA toolbar pattern its role announces: one Tab stop (the
  // button last used), Left/Right move between the buttons and wrap, Home/End go to the ends.
  // Only buttons take part: a slider or field placed in the strip would keep its own arrow keys.
  function rovingFocus(toolbar) {
    const buttons = Array.from(toolbar.querySelectorAll("button"));
    const tabStop = (chosen) => {
      for (const button of buttons) button.tabIndex = button === chosen ? 0 : -1;
    };
    tabStop(buttons[0]);
    // A click or a programmatic focus moves the Tab stop too.
    toolbar.addEventListener("focusin", (event) => {
      if (buttons.includes(event.target)) tabStop(event.target);
    });
    toolbar.addEventListener("keydown", (event) => {
      const index = buttons.indexOf(event.target);
      if (index === -1 || event.ctrlKey || event.metaKey || event.altKey || event.shiftKey) return;
      const last = buttons.length - 1;
      const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: last }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      buttons[next > last ? 0 : next < 0 ? last : next].focus();
    });
  }

  function setUp(root) {
    const filmPane = root.querySelector(".pane-film");
    const stages = root.querySelectorAll(".stage");
    const films = root.querySelectorAll("img.radiograph, img.radiograph-copy");
    const heats = root.querySelectorAll("img.heatmap, img.heatmap-copy");
    const funcs = root.querySelectorAll("feComponentTransfer > *");
    const filterUrl = "url(#" + root.id + "-wl)";
    const control = (name) => root.querySelector('[data-control="' + name + '"]');
    const show = (name) => root.querySelector('[data-show="' + name + '"]');
    const invertButton = root.querySelector('[data-action="invert"]');
    const wlDragButton = root.querySelector('[data-action="wl-drag"]');
    const [w, h] = root.dataset.aspect.split("/").map(Number);
    const aspect = w > 0 && h > 0 ? w / h : 1;
    const grey = { window: 1, level: 0.5, invert: false };

    for (const pane of root.querySelectorAll(".pane")) {
      aspects.set(pane, aspect);
      fitting.observe(pane);
    }

    const zoom = Panzoom(stages[0], { maxScale: 16, minScale: 0.1, step: 0.25, cursor: "grab" });
    const mirror = () => {
      for (const stage of Array.from(stages).slice(1)) stage.style.transform = stages[0].style.transform;
    };
    stages[0].addEventListener("panzoomchange", mirror);
    for (const pane of root.querySelectorAll(".pane")) {
      pane.addEventListener("wheel", zoom.zoomWithWheel, { passive: false });
    }
    // A drag or pinch on the side-by-side copy moves both panes, like one on the film itself.
    root.querySelector(".pane-heat").addEventListener("pointerdown", zoom.handleDown);

    function applyGrey() {
      const slope = (grey.invert ? -1 : 1) / grey.window;
      const low = grey.level - grey.window / 2;
      const intercept = grey.invert ? (low + grey.window) / grey.window : -low / grey.window;
      for (const func of funcs) {
        func.setAttribute("slope", slope.toFixed(4));
        func.setAttribute("intercept", intercept.toFixed(4));
      }
      const identity = grey.window === 1 && grey.level === 0.5 && !grey.invert;
      for (const film of films) film.style.filter = identity ? "" : filterUrl;
      control("window").value = Math.round(grey.window * 100);
      control("level").value = Math.round(grey.level * 100);
      show("window").textContent = Math.round(grey.window * 100) + "%";
      show("level").textContent = Math.round(grey.level * 100) + "%";
      invertButton.setAttribute("aria-pressed", String(grey.invert));
      root.dataset.window = grey.window.toFixed(2);
      root.dataset.level = grey.level.toFixed(2);
    }

    function setGrey(window_, level) {
      grey.window = clamp(window_, 0.02, 1);
      grey.level = clamp(level, 0, 1);
      applyGrey();
    }

    function setOpacity(percent) {
      for (const heat of heats) heat.style.opacity = String(percent / 100);
      show("opacity").textContent = percent + "%";
    }

    function actualSize() {
      const natural = films[0].naturalWidth;
      if (!natural) return;
      zoom.zoom(natural / stages[0].clientWidth);
      zoom.pan(0, 0);
    }

    function reset() {
      zoom.reset();
      grey.invert = false;
      setGrey(1, 0.5);
    }

    const actions = {
      "zoom-in": () => zoom.zoomIn(),
      "zoom-out": () => zoom.zoomOut(),
      fit: () => zoom.reset(),
      actual: actualSize,
      invert: () => {
        grey.invert = !grey.invert;
        applyGrey();
      },
      "wl-drag": () => {
        const on = wlDragButton.getAttribute("aria-pressed") !== "true";
        wlDragButton.setAttribute("aria-pressed", String(on));
        zoom.setOptions({ disablePan: on, cursor: on ? "crosshair" : "grab" });
      },
      preset: (button) => setGrey(Number(button.dataset.window) / 100, Number(button.dataset.level) / 100),
      reset: reset,
    };
    rovingFocus(root.querySelector(".viewer-tools"));
    root.querySelector(".viewer-tools").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button) actions[button.dataset.action](button);
    });
    control("window").addEventListener("input", (e) => setGrey(e.target.value / 100, grey.level));
    control("level").addEventListener("input", (e) => setGrey(grey.window, e.target.value / 100));
    control("opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value)));
    root.querySelector(".side-toggle").addEventListener("change", mirror);

    // Window/level by dragging: Shift+drag or right-drag always, plain drag in "W/L drag" mode.
    // Horizontal movement widens the window, vertical movement raises the level.
    let dragging = null;
    filmPane.addEventListener(
      "pointerdown",
      (event) => {
        const wlMode = wlDragButton.getAttribute("aria-pressed") === "true";
        if (!(event.shiftKey || event.button === 2 || wlMode)) return;
        event.stopPropagation(); // Panzoom would pan
        event.preventDefault();
        filmPane.setPointerCapture(event.pointerId);
        dragging = { x: event.clientX, y: event.clientY, window: grey.window, level: grey.level };
      },
      true,
    );
    filmPane.addEventListener("pointermove", (event) => {
      if (!dragging) return;
      const dx = (event.clientX - dragging.x) / filmPane.clientWidth;
      const dy = (event.clientY - dragging.y) / filmPane.clientHeight;
      setGrey(dragging.window + dx, dragging.level + dy);
    });
    const endDrag = () => {
      dragging = null;
    };
    filmPane.addEventListener("pointerup", endDrag);
    filmPane.addEventListener("pointercancel", endDrag);
    filmPane.addEventListener("contextmenu", (event) => event.preventDefault());

    filmPane.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      const scale = zoom.getScale();
      if (arrows[event.key] && event.shiftKey) {
        const [dx, dy] = arrows[event.key];
        setGrey(grey.window + dx * WL_STEP, grey.level + dy * WL_STEP);
      } else if (arrows[event.key]) {
        const [dx, dy] = arrows[event.key];
        // Arrow keys move the view over the film, like scrolling.
        zoom.pan((-dx * PAN_STEP) / scale, (-dy * PAN_STEP) / scale, { relative: true });
      } else if (event.key === "+" || event.key === "=") {
        zoom.zoomIn();
      } else if (event.key === "-") {
        zoom.zoomOut();
      } else if (event.key === "0") {
        zoom.reset();
      } else if (event.key === "1") {
        actualSize();
      } else if (event.key === "i") {
        actions.invert();
      } else if (event.key === "r") {
        reset();
      } else {
        return;
      }
      event.preventDefault();
      event.stopPropagation(); // the page's own shortcuts do not also fire
    });

    setOpacity(Number(control("opacity").value));
    root.dataset.ready = "true";
  }

  for (const root of document.querySelectorAll("[data-viewer]")) setUp(root);
  // When the page's films became usable: the browser tests read this mark to time the results page.
  performance.mark("viewers-ready");
})();
