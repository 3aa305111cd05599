// Upload page: drag and drop, previews, and an upload with a progress bar.
// Without this script the form still posts and the server answers with a page.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("files");
  const zone = document.getElementById("dropzone");
  const previews = document.getElementById("previews");
  const errors = document.getElementById("upload-errors");
  const progress = document.getElementById("progress");
  const bar = document.getElementById("progress-bar");
  const barText = document.getElementById("progress-text");
  const submit = document.getElementById("submit");
  const maxBytes = Number(form.dataset.maxBytes);
  const maxFiles = Number(form.dataset.maxFiles);
  let chosen = [];
  let objectUrls = [];

  function showErrors(messages) {
    errors.replaceChildren(...messages.map(function (m) {
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = m;
      return p;
    }));
  }

  function renderPreviews() {
    objectUrls.forEach(URL.revokeObjectURL);
    objectUrls = [];
    previews.replaceChildren(...chosen.map(function (file) {
      const li = document.createElement("li");
      const browserCanShow = /^image\/(jpeg|png|webp|bmp|gif)$/.test(file.type);
      if (browserCanShow) {
        const img = document.createElement("img");
        const url = URL.createObjectURL(file);
        objectUrls.push(url);
        img.alt = "Preview of " + file.name;
        img.addEventListener("error", function () {
          // A damaged file: say so instead of showing a broken image.
          const box = document.createElement("div");
          box.className = "no-preview";
          box.textContent = "Cannot preview";
          img.replaceWith(box);
        });
        img.src = url;
        li.appendChild(img);
      } else {
        const box = document.createElement("div");
        box.className = "no-preview";
        box.textContent = file.name.toLowerCase().match(/\.(dcm|dicom)$/) ? "DICOM file" : "No preview";
        li.appendChild(box);
      }
      const caption = document.createElement("span");
      caption.textContent = file.name + " (" + Math.ceil(file.size / 1024) + " KB)";
      li.appendChild(caption);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () {
        chosen.splice(chosen.indexOf(file), 1);
        checkLimits();
        renderPreviews();
      });
      li.appendChild(remove);
      return li;
    }));
  }

  function sameFile(a, b) {
    return a.name === b.name && a.size === b.size && a.lastModified === b.lastModified;
  }

  // The Screen button was disabled while the upload ran, which dropped the keyboard focus to the
  // page itself: the refusal takes it, as the sign-in page's does, and the next Tab goes on from there.
  function refused(messages) {
    progress.hidden = true;
    barText.textContent = "";
    submit.disabled = false;
    showErrors(messages);
    errors.focus();
  }

  // Files picked and files dropped add up, so one can pick two films and then drop a third.
  function choose(files) {
    Array.from(files).forEach(function (file) {
      if (!chosen.some(function (c) { return sameFile(c, file); })) chosen.push(file);
    });
    checkLimits();
    renderPreviews();
  }

  function checkLimits() {
    const problems = [];
    if (chosen.length > maxFiles) problems.push("At most " + maxFiles + " files per upload.");
    const total = chosen.reduce(function (sum, f) { return sum + f.size; }, 0);
    if (total > maxBytes) problems.push("These files are larger together than the upload limit.");
    showErrors(problems);
  }

  // The script checks the chosen list itself (the input is emptied after each pick), so the
  // browser's own "required" check on the input must not block the submit.
  form.noValidate = true;
  input.addEventListener("change", function () {
    choose(input.files);
    input.value = "";  // the list above is what gets sent; this lets the same file be picked again
  });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files.length) choose(event.dataTransfer.files);
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!chosen.length) { showErrors(["Choose at least one file."]); return; }
    const data = new FormData();
    data.append("csrf_token", form.querySelector("input[name=csrf_token]").value);
    chosen.forEach(function (file) { data.append("files", file, file.name); });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      const pct = Math.round(100 * e.loaded / e.total);
      bar.value = pct;
      barText.textContent = pct < 100 ? pct + "%" : "Analysing…";
    });
    xhr.addEventListener("load", function () {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = null; }
      if (body && body.redirect) { window.location.assign(body.redirect); return; }
      const messages = body && body.errors ? body.errors.map(function (e) {
        return (e.filename ? e.filename + ": " : "") + e.message;
      }) : [body && body.error ? body.error.message : "The upload failed (HTTP " + xhr.status + ")."];
      refused(messages);
    });
    xhr.addEventListener("error", function () {
      refused(["The server could not be reached. Check the connection and try again."]);
    });
    progress.hidden = false;
    bar.value = 0;
    barText.textContent = "0%";
    submit.disabled = true;
    showErrors([]);
    xhr.send(data);
  });
}());
