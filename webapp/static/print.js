// The printable result's "Print" button (inline handlers are barred by the Content-Security-Policy).
(function () {
  "use strict";
  const button = document.getElementById("print-button");
  if (button) button.addEventListener("click", () => window.print());
})();
