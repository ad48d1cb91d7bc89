// The web console's only script: parts of a page that refresh themselves, and asking
// before a change. Pages work without it, except for the refreshing.
(function () {
  'use strict';

  // <div data-refresh="/path" data-interval="ms">: its content is fetched again every
  // interval. The server renders and escapes it, like the page.
  function refresh(el) {
    var url = el.getAttribute('data-refresh');
    var every = parseInt(el.getAttribute('data-interval') || '5000', 10);
    var status = document.getElementById('refresh-status');
    function tick() {
      fetch(url, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
        .then(function (r) {
          if (r.status === 401) {
            window.location.assign('/login');
            return null;
          }
          if (!r.ok) throw new Error('HTTP ' + r.status);
          return r.text();
        })
        .then(function (html) {
          if (html === null) return;
          el.innerHTML = html;
          // A part that says it is final stops refreshing.
          if (el.querySelector('[data-settled]')) every = 0;
          if (status) {
            status.textContent = status.getAttribute('data-ok') + ' ' +
              new Date().toISOString().replace(/\.\d+Z$/, 'Z');
          }
        })
        .catch(function () {
          if (status) status.textContent = status.getAttribute('data-failed');
        })
        .then(function () { if (every > 0) setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }

  // <form data-confirm="question">: submitted only when the operator agrees.
  function confirmed(form) {
    form.addEventListener('submit', function (event) {
      if (!window.confirm(form.getAttribute('data-confirm'))) event.preventDefault();
    });
  }


  // <tbody data-tail="/path">: a row per server-sent event, newest first; text only.
  function tail(body) {
    var status = document.getElementById('tail-status');
    var source = new EventSource(body.getAttribute('data-tail'));
    source.onopen = function () {
      if (status) status.textContent = status.getAttribute('data-open');
    };
    source.onerror = function () {
      if (status) status.textContent = status.getAttribute('data-closed');
    };
    source.onmessage = function (message) {
      var e = JSON.parse(message.data);
      var row = document.createElement('tr');
      row.className = 'outcome-' + e.outcome;
      [e.at, e.outcome, e.submission, e.platform, e.destination,
       e.reason + (e.missed ? ' (' + body.getAttribute('data-missed') + ' ' + e.missed + ')' : '')]
        .forEach(function (text) {
          var cell = document.createElement('td');
          cell.textContent = text;
          row.appendChild(cell);
        });
      body.insertBefore(row, body.firstChild);
      while (body.children.length > 500) body.removeChild(body.lastChild);
    };
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('[data-refresh]').forEach(refresh);
    document.querySelectorAll('[data-tail]').forEach(tail);
    document.querySelectorAll('form[data-confirm]').forEach(confirmed);
  });
})();
