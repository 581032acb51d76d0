// mapsync dashboard: give every htmx request the session's CSRF token (read from <body data-csrf>).
// The forms also carry it in a hidden field, so they work without JavaScript.
document.addEventListener("htmx:configRequest", function (event) {
  var token = document.body.getAttribute("data-csrf");
  if (token) {
    event.detail.headers["X-CSRF-Token"] = token;
  }
});
