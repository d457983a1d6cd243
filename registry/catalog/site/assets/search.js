// Filters the bundle list of the catalog index: every word typed must occur
// in a bundle's text, and the category and hook selects must match.
(function () {
  "use strict";
  var q = document.getElementById("q");
  var category = document.getElementById("category");
  var hook = document.getElementById("hook");
  var count = document.getElementById("count");
  var empty = document.getElementById("empty");
  var items = Array.prototype.slice.call(document.querySelectorAll("li.bundle"));

  function has(list, value) {
    return value === "" || (" " + list + " ").indexOf(" " + value + " ") >= 0;
  }

  function filter() {
    var words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    items.forEach(function (li) {
      var text = li.getAttribute("data-text");
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; }) &&
        has(li.getAttribute("data-categories"), category.value) &&
        has(li.getAttribute("data-hooks"), hook.value);
      li.hidden = !ok;
      if (ok) { shown++; }
    });
    count.textContent = shown + " of " + items.length + " bundles";
    empty.hidden = shown !== 0;
  }

  // A link may carry a search: index.html?q=rate&category=firewall&hook=xdp
  var params = new URLSearchParams(window.location.search);
  if (params.has("q")) { q.value = params.get("q"); }
  if (params.has("category")) { category.value = params.get("category"); }
  if (params.has("hook")) { hook.value = params.get("hook"); }

  q.addEventListener("input", filter);
  category.addEventListener("change", filter);
  hook.addEventListener("change", filter);
  filter();
}());
