// The ipywidgets HTML manager (1.x) typesets widget labels with MathJax 2's API, `MathJax.Hub.Queue(["Typeset",
// MathJax.Hub, element])`; this site serves MathJax 3, which has no `Hub`. Give it that one call, mapped to
// MathJax 3's typesetPromise, on the config object before MathJax loads and on MathJax itself once it has.
(function () {
  function queue() {
    for (var i = 0; i < arguments.length; i++) {
      var job = arguments[i];
      if (typeof job === "function") {
        job();
      } else if (Array.isArray(job) && job[0] === "Typeset" && window.MathJax && window.MathJax.typesetPromise) {
        window.MathJax.typesetPromise(job[2] ? [job[2]] : undefined).catch(function () {});
      }
    }
  }
  function shim() {  // only where the page has MathJax (a page without maths loads none, and needs none)
    if (!window.MathJax) return false;
    if (!window.MathJax.Hub) window.MathJax.Hub = { Queue: queue };
    return Boolean(window.MathJax.version);
  }
  shim();
  var tries = 0;
  var timer = setInterval(function () {
    if (shim() || ++tries > 400) clearInterval(timer);  // until MathJax 3 has replaced its config object (20 s)
  }, 50);
})();
