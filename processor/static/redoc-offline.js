// Redoc 2's sidebar footer ("API docs by Redocly") loads its logo from https://cdn.redoc.ly,
// hard-coded in the bundle with no option to turn it off. Offline that request fails with a
// console error, and online it is a request to a third party. Loaded before redoc.standalone.js,
// this swaps that one URL for an empty inline image; nothing else is touched.
"use strict";
(function () {
  const CDN = "https://cdn.redoc.ly/";
  const EMPTY = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E";
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof HTMLImageElement && name === "src" && String(value).startsWith(CDN)) {
      value = EMPTY;
    }
    return setAttribute.call(this, name, value);
  };
  const src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    ...src,
    set(value) { src.set.call(this, String(value).startsWith(CDN) ? EMPTY : value); },
  });
})();
