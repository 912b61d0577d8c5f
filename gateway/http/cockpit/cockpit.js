/* The CRM cockpit: one page over the JSON API of `crm serve`.
 *
 * Hash routes: #/s/{scorecard}/n/{node}, .../explain/{measure}, .../event/{position};
 * `&as_of=RFC3339` and `&version=N` may follow; `&token=crm_...` (or `#token=...`) is kept
 * in sessionStorage and taken out of the address bar. Charts are SVG the server renders
 * (`*_svg` fields): inserted as they come, never drawn here. Every other text goes in as
 * text. Live: the SSE feed read with fetch() (EventSource cannot send a credential); any
 * event re-reads the open view (debounced, one request in flight); without the feed
 * permission the view is polled.
 */
(function () {
  'use strict';

  var TOKEN_KEY = 'crm.cockpit.token';
  var DEBOUNCE_MS = 150;
  var POLL_MS = 5000;
  var PAGE_ROWS = 50;
  var HIGHLIGHT_MS = 4000;
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;
  var CHANGES_SHOWN = 8;
  var RETRIES = 4;
  var RETRY_MS = 1000;

  // A marker of this load of the page: the tests check it survives live updates.
  window.__cockpitLoadedAt = performance.timeOrigin + performance.now();

  var STATUS_TEXT = {
    on_track: 'on track',
    at_risk: 'at risk',
    off_track: 'off track',
    no_data: 'no data'
  };
  var NUMBER = new Intl.NumberFormat('en-US');

  var state = {
    token: readToken(),
    route: null,
    seq: 0,            // bumped by every navigation: older answers are dropped
    view: null,        // the last scorecard view rendered
    viewKey: null,     // which scorecard/node/as_of/version it is
    viewStale: true,   // events arrived since it was read
    figures: {},       // measure id -> actual display of viewKey, to mark changes
    explain: null,     // {key, url, data, rows, next}
    rows: {},          // explanation rows by position (the event panel's fallback)
    changes: {},       // status changes by position
    top: {},           // the caller's top node by scorecard
    refresh: { timer: null, inFlight: false, dirty: false },
    feed: { generation: 0, controller: null, lastId: null, backoff: BACKOFF_MIN_MS, poll: null, state: 'off' },
    firstReady: false,
    navigated: false
  };
  // What the tests read: counts, and whether a refresh is pending or running.
  var stats = { renders: 0, refreshes: 0, events: 0, marks: [],
    pending: function () { return !!state.refresh.timer || state.refresh.inFlight; } };
  /* When things happened (event received, view requested, answered, rendered): the last 100. */
  function mark(what) {
    stats.marks.push([what, Date.now()]);
    if (stats.marks.length > 100) stats.marks.shift();
  }
  window.__cockpit = stats;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  /* ---------- small DOM helpers (text only; SVG goes through svgInto) ---------- */

  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'text') el.textContent = v;
        else if (k === 'className') el.className = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child);
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function setText(selector, text, root) { var el = $(selector, root); if (el) el.textContent = text == null ? '' : String(text); return el; }
  /* The server renders the charts; its SVG is inserted as it is (only when it changed). */
  function svgInto(el, svg) {
    svg = svg || '';
    if (el.__svg === svg) return;
    el.__svg = svg;
    el.innerHTML = svg;
  }
  function statusBadge(status) {
    var s = STATUS_TEXT[status] ? status : 'no_data';
    return h('span', { className: 'status', 'data-status': s, text: STATUS_TEXT[s] });
  }
  function count(n) { return typeof n === 'number' ? NUMBER.format(n) : String(n == null ? '' : n); }
  function when(text) {
    if (!text) return '';
    var m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(text);
    return m ? m[1] + ' ' + m[2] : text;
  }
  /* A period label: its instants as dates (`2014-01-01 – 2020-01-01`), or as it is. */
  function span(text) {
    return String(text || '').replace(/(\d{4}-\d{2}-\d{2})T[0-9:.]+(Z|[+-]\d{2}:\d{2})/g, '$1').replace('..', ' – ');
  }
  /* A date, or an instant: midnight UTC shows as the date alone. */
  function day(text) {
    var m = /^(\d{4}-\d{2}-\d{2})(T00:00:00(\.0+)?(Z|\+00:00))?$/.exec(String(text));
    return m ? m[1] : when(text);
  }
  function sum(obj) {
    var total = 0;
    Object.keys(obj || {}).forEach(function (k) { if (typeof obj[k] === 'number') total += obj[k]; });
    return total;
  }
  function enc(s) { return encodeURIComponent(s); }
  function dec(s) { try { return decodeURIComponent(s); } catch (e) { return s; } }

  /* ---------- the credential ---------- */

  function readToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }
  function storeToken(token) {
    state.token = token || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* private mode: kept in memory only */ }
  }

  /* ---------- routes ---------- */

  function parseHash(hash) {
    var raw = (hash || '').replace(/^#/, '');
    var params = {};
    var path = '';
    raw.split('&').forEach(function (part) {
      if (!part) return;
      var eq = part.indexOf('=');
      if (part.charAt(0) !== '/' && eq > 0) params[dec(part.slice(0, eq))] = dec(part.slice(eq + 1));
      else if (!path) path = part;
    });
    var seg = path.split('/').filter(Boolean).map(dec);
    var route = { scorecard: null, node: null, view: 'scorecard', measure: null, position: null,
      as_of: params.as_of || null, version: params.version || null };
    if (seg[0] === 's' && seg[1]) route.scorecard = seg[1];
    if (route.scorecard && seg[2] === 'n' && seg[3]) route.node = seg[3];
    if (route.node && seg[4] === 'explain' && seg[5]) { route.view = 'explain'; route.measure = seg[5]; }
    else if (route.node && seg[4] === 'event' && /^\d+$/.test(seg[5] || '')) { route.view = 'event'; route.position = Number(seg[5]); }
    return { route: route, token: params.token || null };
  }

  function hashFor(route, change) {
    var r = Object.assign({}, route, change || {});
    if (!r.scorecard) return '#/';
    var out = '#/s/' + enc(r.scorecard);
    if (r.node) {
      out += '/n/' + enc(r.node);
      if (r.view === 'explain' && r.measure) out += '/explain/' + enc(r.measure);
      if (r.view === 'event' && r.position != null) out += '/event/' + r.position;
    }
    if (r.as_of) out += '&as_of=' + enc(r.as_of);
    if (r.version) out += '&version=' + enc(r.version);
    return out;
  }
  function nodeHash(node) { return hashFor(state.route, { node: node, view: 'scorecard', measure: null, position: null }); }

  function replaceHash(hash) {
    history.replaceState(history.state, '', location.pathname + location.search + hash);
  }

  function viewUrl(route) {
    var q = [];
    if (route.node) q.push('node=' + enc(route.node));
    if (route.as_of) q.push('as_of=' + enc(route.as_of));
    if (route.version) q.push('version=' + enc(route.version));
    return '/v1/scorecards/' + enc(route.scorecard) + (q.length ? '?' + q.join('&') : '');
  }
  function keyOf(route) { return [route.scorecard, route.node, route.as_of || '', route.version || ''].join('|'); }

  /* ---------- the API ---------- */

  function ApiError(status, problem, message) {
    this.status = status;
    this.problem = problem || null;
    this.message = message || (problem && (problem.detail || problem.title)) || ('the server answered ' + status);
  }

  function headers(extra) {
    var out = { Accept: 'application/json' };
    if (state.token) out.Authorization = 'Bearer ' + state.token;
    Object.keys(extra || {}).forEach(function (k) { out[k] = extra[k]; });
    return out;
  }

  function api(path) {
    return fetch(path, { headers: headers(), cache: 'no-store', credentials: 'same-origin' }).then(function (response) {
      return response.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!response.ok) throw new ApiError(response.status, body);
        if (body === null) throw new ApiError(response.status, null, 'the server sent no JSON for ' + path);
        return body;
      });
    }, function (e) {
      throw new ApiError(0, null, 'the server cannot be reached (' + (e && e.message || e) + ')');
    });
  }

  /* ---------- page states ---------- */

  var main = $('#cockpit');

  function setState(value, status) {
    main.setAttribute('data-state', value);
    if (status) main.setAttribute('data-error-status', status); else main.removeAttribute('data-error-status');
    if (value === 'ready' && !state.firstReady) {
      state.firstReady = true;
      window.__cockpitFirstReadyMs = performance.now();
    }
  }

  function showMessage(text, kind, extra) {
    var box = $('#message');
    clear(box);
    if (!text) { box.hidden = true; return; }
    box.setAttribute('data-kind', kind || 'error');
    append(box, h('p', { text: text }));
    if (extra) append(box, extra);
    box.hidden = false;
  }

  function showPanel(which) {
    $('#scorecard-view').hidden = which !== 'scorecard';
    $('#explain').hidden = which !== 'explain';
    $('#event').hidden = which !== 'event';
  }

  function showLogin(why) {
    $('#login').hidden = false;
    $('#login-why').textContent = why || 'The server asks for an API token.';
    main.hidden = true;
    setState('login', '401');
    var input = $('#login-token');
    input.value = '';
    input.focus();
  }

  function failed(error, seq) {
    if (seq !== undefined && seq !== state.seq) return;
    if (error.status === 401) {
      var hadToken = !!state.token;
      storeToken(null);
      stopFeed();
      showLogin(hadToken ? 'The token was refused: ' + error.message + '. Enter another API token.' : 'The server asks for an API token.');
      return;
    }
    main.hidden = false;
    var extra = null;
    if (error.status === 403 || error.status === 404) {
      extra = state.route && state.route.scorecard
        ? h('p', null, h('a', { href: '#/s/' + enc(state.route.scorecard), text: 'Open the top node you may see' }))
        : null;
    } else {
      var retry = h('button', { type: 'button', text: 'Try again' });
      retry.addEventListener('click', function () { navigate(0); });
      extra = h('p', null, retry);
    }
    showMessage(error.message, 'error', extra);
    if (error.status === 403 || error.status === 404) {
      // Nothing of what was refused stays on screen.
      showPanel('none');
      $('#overview').hidden = true;
      clear($('#children ul'));
      clear($('#path ol'));
    }
    setState('error', String(error.status || 'network'));
  }

  /* ---------- navigation ---------- */

  function navigate(tries) {
    tries = typeof tries === 'number' ? tries : 0;
    // An in-page anchor (a link of the strategy map to an objective, the skip link) is not
    // a route: go to the element and keep the route in the address bar.
    var raw = location.hash.replace(/^#/, '');
    if (raw && raw.charAt(0) !== '/' && raw.indexOf('=') < 0 && state.route && state.route.scorecard) {
      var target = document.getElementById(dec(raw));
      replaceHash(hashFor(state.route));
      if (target) {
        if (!target.hasAttribute('tabindex') && !/^(A|BUTTON|INPUT)$/.test(target.tagName)) target.setAttribute('tabindex', '-1');
        target.focus();
        target.scrollIntoView({ block: 'start' });
      }
      return;
    }
    var parsed = parseHash(location.hash);
    if (parsed.token) {
      storeToken(parsed.token);
      replaceHash(parsed.route.scorecard ? hashFor(parsed.route) : '');
      restartFeed();
    }
    var route = parsed.route;
    var previous = state.route;
    state.route = route;
    var seq = ++state.seq;
    var moved = state.navigated;
    state.navigated = true;
    $('#login').hidden = true;
    main.hidden = false;
    showMessage(null);
    setState('loading');

    var ready = resolveDefaults(route, seq).then(function (view) {
      if (seq !== state.seq) return;
      showPanel(route.view);
      $('#overview').hidden = false;
      if (route.view === 'scorecard') {
        return loadView(route, seq, view).then(function () {
          if (seq !== state.seq) return;
          setState('ready');
          if (state.viewStale) scheduleRefresh();
          if (moved && (!previous || previous.node !== route.node || previous.view !== 'scorecard')) focusHeading('#node-name');
        });
      }
      if (route.view === 'explain') {
        return loadView(route, seq, view).then(function () { return openExplain(route, seq); }).then(function () {
          if (seq !== state.seq) return;
          setState('ready');
          if (moved) focusHeading('#explain-title');
        });
      }
      return loadView(route, seq, view).then(function () { return openEvent(route, seq); }).then(function () {
        if (seq !== state.seq) return;
        setState('ready');
        if (moved) focusHeading('#event-title');
      });
    });
    ready.catch(function (e) {
      var error = e instanceof ApiError ? e : new ApiError(0, null, String(e && e.message || e));
      // Busy or timed out (503), or unreachable: try again a few times before giving up.
      if ((error.status === 503 || error.status === 0) && tries < RETRIES && seq === state.seq) {
        showMessage('The server is busy (' + error.message + '); trying again.', 'info');
        setTimeout(function () { if (seq === state.seq) navigate(tries + 1); }, RETRY_MS * Math.pow(2, tries));
        return;
      }
      failed(error, seq);
    });
  }

  function focusHeading(selector) {
    var el = $(selector);
    if (el) el.focus({ preventScroll: false });
  }

  /* The scorecard and node the route leaves out: the default scorecard, the caller's top node. */
  function resolveDefaults(route, seq) {
    var chain = Promise.resolve(null);
    if (!route.scorecard) {
      chain = api('/v1/scorecards').then(function (list) {
        var all = (list && list.scorecards) || [];
        var pick = all.filter(function (s) { return s.is_default; })[0] || all[0];
        if (!pick) throw new ApiError(404, { detail: 'No scorecard is defined yet: define one, then reload.' });
        route.scorecard = pick.id;
        return null;
      });
    }
    if (!route.node) {
      chain = chain.then(function () {
        return api(viewUrl(route)).then(function (view) {
          route.node = view.node && view.node.id;
          state.top[route.scorecard] = route.node;
          if (seq === state.seq) replaceHash(hashFor(route));
          return view;
        });
      });
    }
    return chain;
  }

  /* Reads the view for the route (unless `view` was just read), renders it. */
  function loadView(route, seq, view) {
    var key = keyOf(route);
    var seen = stats.events;
    var have = view ? Promise.resolve(view)
      : (state.view && state.viewKey === key && !state.viewStale && route.view !== 'scorecard')
        ? Promise.resolve(state.view)
        : api(viewUrl(route));
    return have.then(function (v) {
      if (seq !== state.seq) return;
      renderView(v, key, false);
      // Events that came while the view was read may not be in it.
      if (stats.events !== seen) state.viewStale = true;
      learnTop(route);
      startFeedOnce();
    });
  }

  /* ---------- rendering the scorecard view ---------- */

  function renderView(view, key, live) {
    var sameKey = state.viewKey === key;
    if (sameKey && state.view && state.view.log && view.log && live &&
        Number(view.log.position) < Number(state.view.log.position)) {
      return; // an older answer overtaken by a newer one
    }
    var keep = live ? focusKey() : null;
    var previous = sameKey ? state.figures : {};
    if (!sameKey) state.changes = {}; // the changes listed are the open node's
    state.view = view;
    state.viewKey = key;
    state.viewStale = false;
    stats.renders++;
    mark('render');

    var sc = view.scorecard || {};
    var node = view.node || {};
    var route = state.route;
    main.setAttribute('data-scorecard', sc.id || route.scorecard || '');
    main.setAttribute('data-node', node.id || route.node || '');
    main.setAttribute('data-log-position', view.log ? view.log.position : '');

    setText('#scorecard-name', (sc.name || sc.id || '') + (sc.version != null ? ' v' + sc.version : ''));
    var meta = $('#log-meta');
    clear(meta);
    if (view.log) {
      append(meta, (view.as_of ? 'as of ' + view.as_of + ', ' : '') + 'log position ' + count(view.log.position));
      meta.title = 'chain hash ' + (view.log.chain_hash || '');
    }
    document.title = (node.name ? node.name + ': ' : '') + (sc.name || 'CRM cockpit');
    $all('[data-back]').forEach(function (a) { a.setAttribute('href', nodeHash(node.id)); });

    renderPath(node);
    renderNode(view, node);
    renderChildren(node);
    svgInto($('#strategy-map'), view.strategy_map_svg);
    $('#map-section').hidden = !view.strategy_map_svg;
    var changed = renderPerspectives(view, previous);
    mergeChanges(view.status_changes || [], false);
    renderChanges();
    if (keep) restoreFocus(keep);
    if (live && changed.length) highlight(changed);
  }

  /* The breadcrumb; the nodes above the caller's top node are named, not linked (the
     server would refuse them). */
  function renderPath(node) {
    var ol = clear($('#path ol'));
    var path = (node.path && node.path.length) ? node.path : [{ id: node.id, name: node.name }];
    var top = state.top[state.route.scorecard];
    var from = 0;
    path.forEach(function (p, i) { if (p.id === top) from = i; });
    path.forEach(function (p, i) {
      var current = p.id === node.id;
      append(ol, h('li', null, i < from
        ? h('span', { className: 'above', 'data-above': p.id, text: p.name || p.id })
        : h('a', {
          href: nodeHash(p.id), 'data-node': p.id, 'data-focus': 'path:' + p.id,
          'aria-current': current ? 'page' : null, text: p.name || p.id
        })));
    });
  }

  /* The caller's top node (the one the scorecard opens at without a node): read once. */
  function learnTop(route) {
    var sc = route.scorecard;
    if (state.top[sc] !== undefined) return;
    state.top[sc] = null;
    api(viewUrl({ scorecard: sc, as_of: route.as_of, version: route.version })).then(function (view) {
      state.top[sc] = view.node && view.node.id;
      if (state.view && state.route.scorecard === sc) renderPath(state.view.node || {});
    }, function () { delete state.top[sc]; });
  }

  function renderNode(view, node) {
    setText('#node-name', node.name || node.id || '');
    var bits = [];
    if (node.kind) bits.push(node.kind);
    if (node.owner) bits.push('owner ' + node.owner);
    var where = node.where || {};
    Object.keys(where).forEach(function (k) { bits.push(k + ' = ' + where[k]); });
    setText('#node-meta', bits.join(' · '));
    var st = clear($('#node-status'));
    append(st, ['Overall: ', statusBadge(view.status)]);
  }

  function renderChildren(node) {
    var nav = $('#children');
    var ul = clear($('ul', nav));
    var kids = node.children || [];
    kids.forEach(function (c) {
      append(ul, h('li', null,
        h('a', { href: nodeHash(c.id), 'data-node': c.id, 'data-focus': 'child:' + c.id, text: c.name || c.id }),
        h('span', { className: 'sub' }, [c.kind || '', c.owner ? ' · ' + c.owner : '']),
        statusBadge(c.status)));
    });
    $('.empty', nav).hidden = kids.length > 0;
  }

  /* One table per perspective; returns the ids of measures whose actual changed. */
  function renderPerspectives(view, previous) {
    var box = $('#perspectives');
    var route = state.route;
    var objectiveNames = {};
    (view.perspectives || []).forEach(function (p) {
      (p.objectives || []).forEach(function (o) { objectiveNames[o.id] = o.name || o.id; });
    });
    var figures = {};
    var changed = [];
    var tables = [];
    (view.perspectives || []).forEach(function (p) {
      var tbody = h('tbody');
      (p.objectives || []).forEach(function (o) {
        var causes = (o.causes || []).map(function (c) { return objectiveNames[c] || String(c).replace(/_/g, ' '); });
        append(tbody, h('tr', { className: 'objective', 'data-objective': o.id, id: 'objective-' + o.id },
          h('th', { colspan: 7, scope: 'colgroup' },
            (o.name || o.id) + ' ', statusBadge(o.status),
            causes.length ? h('span', { className: 'causes', text: ' driven by: ' + causes.join(', ') }) : null)));
        (o.measures || []).forEach(function (m) {
          var shown = m.actual ? (m.actual.display != null ? String(m.actual.display) : String(m.actual.value)) : '';
          figures[m.id] = shown;
          if (Object.prototype.hasOwnProperty.call(previous, m.id) && previous[m.id] !== shown) changed.push(m.id);
          append(tbody, measureRow(route, m));
        });
      });
      tables.push(h('div', { className: 'table-box' },
        h('table', { 'data-perspective': p.id },
          h('caption', null, (p.name || p.id) + ' ', statusBadge(p.status)),
          h('thead', null, h('tr', null,
            h('th', { scope: 'col', text: 'Measure' }), h('th', { scope: 'col', text: 'Owner' }),
            h('th', { scope: 'col', text: 'Actual' }), h('th', { scope: 'col', text: 'Target' }),
            h('th', { scope: 'col', text: 'Actual vs target' }),
            h('th', { scope: 'col', text: 'Status' }), h('th', { scope: 'col', text: 'Trend' }))),
          tbody)));
    });
    // Reuse the rendered charts when nothing about them changed (no flicker on live updates).
    var oldCharts = {};
    $all('[data-chart]', box).forEach(function (el) { oldCharts[el.getAttribute('data-chart')] = el; });
    tables.forEach(function (t) {
      $all('[data-chart]', t).forEach(function (slot) {
        var old = oldCharts[slot.getAttribute('data-chart')];
        if (old && old.__svg === slot.__pending) { slot.parentNode.replaceChild(old, slot); }
        else { svgInto(slot, slot.__pending); }
      });
    });
    clear(box);
    append(box, tables);
    if (!tables.length) append(box, h('p', { className: 'empty', text: 'This scorecard has no measures at this node.' }));
    state.figures = figures;
    return changed;
  }

  function chart(id, svg) {
    var slot = h('div', { className: 'svg-box', 'data-chart': id });
    slot.__pending = svg || '';
    return slot;
  }

  function measureRow(route, m) {
    var na = !!m.not_applicable;
    var tr = h('tr', { 'data-measure': m.id, id: 'measure-' + m.id, className: na ? 'na' : null });
    var metric = m.metric ? m.metric.id + '@' + m.metric.version : '';
    append(tr, h('td', { 'data-field': 'name', 'data-label': 'Measure' },
      m.name || m.id,
      h('span', { className: 'sub', text: [metric, m.grain ? 'per ' + m.grain : '', m.direction ? (m.direction === 'lower' ? 'lower is better' : 'higher is better') : ''].filter(Boolean).join(' · ') })));
    append(tr, h('td', { 'data-field': 'owner', 'data-label': 'Owner', text: m.owner || '' }));

    var actual = h('td', { 'data-field': 'actual', 'data-label': 'Actual' });
    if (na) {
      append(actual, h('span', { text: 'not applicable' }), h('span', { className: 'sub', text: m.not_applicable }));
    } else {
      var figure = m.actual ? (m.actual.display != null ? String(m.actual.display) : String(m.actual.value)) : 'no data';
      append(actual, h('a', {
        href: hashFor(route, { view: 'explain', measure: m.id, position: null }),
        'data-focus': 'actual:' + m.id, title: 'Explain ' + (m.name || m.id) + ': the events counted and left out',
        text: figure
      }));
      if (m.actual) {
        var left = sum(m.actual.excluded);
        append(actual, h('span', { className: 'sub', text: count(m.actual.included) + ' counted' + (left ? ', ' + count(left) + ' left out' : '') }));
      }
    }
    append(tr, actual);

    var target = h('td', { 'data-field': 'target', 'data-label': 'Target' });
    if (m.target) {
      append(target, h('span', { text: m.target.display != null ? String(m.target.display) : String(m.target.value) }));
      if (m.target.by) append(target, h('span', { className: 'sub', text: 'by ' + day(m.target.by) }));
    } else {
      append(target, h('span', { text: '—' }), h('span', { className: 'sub', text: 'no target' }));
    }
    if (m.baseline && m.baseline.display != null) append(target, h('span', { className: 'sub', text: 'baseline ' + m.baseline.display }));
    append(tr, target);

    append(tr, h('td', { 'data-field': 'bullet', 'data-label': 'vs target' }, chart('bullet:' + m.id, m.bullet_svg)));
    append(tr, h('td', { 'data-field': 'status', 'data-label': 'Status' }, statusBadge(na ? 'no_data' : m.status)));
    var trend = h('td', { 'data-field': 'trend', 'data-label': 'Trend' });
    if (m.trend_svg) append(trend, chart('trend:' + m.id, m.trend_svg));
    else if (m.trend && m.trend.length) append(trend, m.trend.map(function (t) { return t.period + ' ' + (t.display || t.value); }).join(', '));
    append(tr, trend);
    return tr;
  }

  /* Marks changed figures for a few seconds: a background and the word "updated". */
  function highlight(ids) {
    ids.forEach(function (id) {
      var row = $('#perspectives tr[data-measure="' + cssEscape(id) + '"]');
      if (!row) return;
      var cell = $('td[data-field="actual"]', row);
      cell.classList.add('changed');
      if (!$('.updated-tag', cell)) append(cell, h('span', { className: 'updated-tag', text: 'updated' }));
    });
    setTimeout(function () {
      ids.forEach(function (id) {
        var row = $('#perspectives tr[data-measure="' + cssEscape(id) + '"]');
        if (!row) return;
        var cell = $('td[data-field="actual"]', row);
        cell.classList.remove('changed');
        var tag = $('.updated-tag', cell);
        if (tag) tag.remove();
      });
    }, HIGHLIGHT_MS);
  }

  function cssEscape(s) { return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, '\\$&'); }

  function focusKey() {
    var el = document.activeElement;
    return el && el.getAttribute ? el.getAttribute('data-focus') : null;
  }
  function restoreFocus(key) {
    var el = $('[data-focus="' + cssEscape(key) + '"]');
    if (el && document.activeElement !== el) el.focus({ preventScroll: true });
  }

  /* ---------- status changes ---------- */

  function mergeChanges(list, fresh) {
    list.forEach(function (c) {
      if (c && c.position != null && !state.changes[c.position]) {
        state.changes[c.position] = Object.assign({ fresh: fresh }, c);
      }
    });
  }

  function renderChanges() {
    var ol = clear($('#changes'));
    var view = state.view || {};
    var nodeNames = {};
    var node = view.node || {};
    (node.path || []).forEach(function (p) { nodeNames[p.id] = p.name; });
    (node.children || []).forEach(function (c) { nodeNames[c.id] = c.name; });
    if (node.id) nodeNames[node.id] = node.name;
    var measureNames = {};
    (view.perspectives || []).forEach(function (p) {
      (p.objectives || []).forEach(function (o) {
        (o.measures || []).forEach(function (m) { measureNames[m.id] = m.name; });
      });
    });
    var all = Object.keys(state.changes).map(Number).sort(function (a, b) { return b - a; });
    var positions = state.allChanges ? all : all.slice(0, CHANGES_SHOWN);
    positions.forEach(function (pos) {
      var c = state.changes[pos];
      var li = h('li', { 'data-position': pos, className: c.fresh ? 'fresh' : null },
        statusBadge(c.to), ' ',
        (measureNames[c.measure] || c.measure || 'status') + ' at ' + (nodeNames[c.node] || String(c.node || '?').split('.').join(' › ')) + ': ' +
          (c.from ? (STATUS_TEXT[c.from] || c.from) + ' → ' : 'first assessed ') + (STATUS_TEXT[c.to] || c.to || '?') +
          (c.actual_display ? ' (' + c.actual_display + ')' : ''),
        h('span', { className: 'sub', text: 'position ' + count(pos) + (c.recorded_at ? ' · ' + when(c.recorded_at) : '') }));
      append(ol, li);
    });
    $('#changes-empty').hidden = positions.length > 0;
    var toggle = $('#changes-all');
    toggle.hidden = all.length <= CHANGES_SHOWN;
    toggle.textContent = state.allChanges ? 'Show the latest ' + CHANGES_SHOWN : 'Show all ' + all.length + ' changes';
    toggle.setAttribute('aria-expanded', state.allChanges ? 'true' : 'false');
  }

  /* ---------- explanation ---------- */

  function findMeasure(id) {
    var found = null;
    ((state.view && state.view.perspectives) || []).forEach(function (p) {
      (p.objectives || []).forEach(function (o) {
        (o.measures || []).forEach(function (m) { if (m.id === id) found = m; });
      });
    });
    return found;
  }

  function explainUrl(route, offset) {
    var m = findMeasure(route.measure);
    var base = (m && m.explain) ||
      ('/v1/scorecards/' + enc(route.scorecard) + '/explain?node=' + enc(route.node) + '&measure=' + enc(route.measure));
    var url = new URL(base, location.origin);
    if (route.as_of && !url.searchParams.has('as_of')) url.searchParams.set('as_of', route.as_of);
    if (route.version && !url.searchParams.has('version')) url.searchParams.set('version', route.version);
    url.searchParams.set('offset', String(offset));
    url.searchParams.set('limit', String(PAGE_ROWS));
    return url.pathname + url.search;
  }

  function openExplain(route, seq) {
    var key = keyOf(route) + '|' + route.measure;
    var panel = $('#explain');
    $('#explain-stale').hidden = true;
    if (state.explain && state.explain.key === key && !state.explain.stale) {
      return Promise.resolve();
    }
    return api(explainUrl(route, 0)).then(function (data) {
      if (seq !== state.seq) return;
      state.explain = { key: key, data: data, next: data.next_offset, shown: 0, stale: false };
      var m = findMeasure(route.measure);
      var node = (state.view && state.view.node) || {};
      setText('#explain-title', (m ? m.name : route.measure) + ' at ' + (node.name || route.node) + ': what was counted');
      var metric = data.metric || (m && m.metric) || {};
      setText('[data-field="metric"]', (metric.id || '?') + '@' + (metric.version != null ? metric.version : '?') + (metric.name ? ' (' + metric.name + ')' : ''), panel);
      setText('[data-field="spec-hash"]', metric.spec_hash || '', panel);
      var query = data.query || {};
      var filter = query.filter || {};
      var where = Object.keys(filter).map(function (k) { return k + ' = ' + filter[k]; });
      setText('[data-field="query"]', (query.period ? 'period ' + query.period : '') + (where.length ? (query.period ? '; ' : '') + where.join(', ') : ''), panel);
      setText('[data-field="log-position"]', data.log ? data.log.position : '', panel);
      setText('[data-field="chain-hash"]', data.log ? data.log.chain_hash : '', panel);
      if (data.log) main.setAttribute('data-log-position', data.log.position);
      renderFigures(data);
      clear($('#explain-rows tbody'));
      appendRows(route, data.rows || []);
      pagingText(data);
    });
  }

  function renderFigures(data) {
    var box = clear($('#explain [data-field="figures"]'));
    (data.figures || []).forEach(function (f) {
      var excluded = f.excluded || {};
      var reasons = Object.keys(excluded);
      var left = sum(excluded);
      append(box, h('p', { className: 'figure' },
        h('strong', { text: f.display != null ? String(f.display) : '' }),
        ': ' + count(f.included) + ' events counted, ' + count(left) + ' left out' + (reasons.length ? ':' : '')));
      if (reasons.length) {
        append(box, h('ul', { className: 'reasons' }, reasons.map(function (r) {
          return h('li', { 'data-reason': r, text: r + ': ' + count(excluded[r]) });
        })));
      }
    });
    // Totals per cell ("" when the figure is not broken down): the scalar fields.
    var totals = data.totals;
    if (totals && typeof totals === 'object') {
      var scalars = function (o) {
        return Object.keys(o).filter(function (k) { return o[k] !== null && typeof o[k] !== 'object'; })
          .map(function (k) { return k + ' ' + (typeof o[k] === 'number' ? count(o[k]) : o[k]); }).join(', ');
      };
      var lines = [];
      var flat = scalars(totals);
      if (flat) lines.push(flat);
      Object.keys(totals).forEach(function (k) {
        var v = totals[k];
        if (v && typeof v === 'object' && !Array.isArray(v)) {
          var text = scalars(v);
          if (text) lines.push((k ? k + ': ' : '') + text);
        }
      });
      lines.forEach(function (line) { append(box, h('p', { className: 'sub', text: 'Totals: ' + line })); });
    }
  }

  function appendRows(route, rows) {
    var tbody = $('#explain-rows tbody');
    rows.forEach(function (r) {
      state.rows[r.position] = r;
      var value = r.value != null ? r.value
        : (r.numerator != null || r.denominator != null) ? (r.numerator != null ? r.numerator : '') + ' / ' + (r.denominator != null ? r.denominator : '') : '';
      append(tbody, h('tr', { 'data-position': r.position },
        h('td', null, h('a', {
          href: hashFor(route, { view: 'event', position: r.position, measure: null }),
          'data-focus': 'pos:' + r.position, title: 'Open event ' + r.position, text: String(r.position)
        })),
        h('td', { text: r.event_type || '' }),
        h('td', { className: 'hash', text: r.stream || '' }),
        h('td', { text: when(r.occurred_at), title: r.occurred_at || null }),
        h('td', { text: span(r.period), title: r.period || null }),
        h('td', { className: 'decision', 'data-decision': r.decision, text: r.decision + (r.rule ? ': ' + r.rule : '') }),
        h('td', { text: typeof value === 'object' ? JSON.stringify(value) : String(value) })));
    });
    state.explain.shown += rows.length;
  }

  function pagingText(data) {
    var total = data.total_rows;
    setText('#explain [data-field="shown"]', 'Showing ' + count(state.explain.shown) + (total != null ? ' of ' + count(total) : '') + ' events.');
    $('#explain-more').hidden = state.explain.next == null;
  }

  function moreRows() {
    var route = state.route;
    var ex = state.explain;
    if (!ex || ex.next == null || route.view !== 'explain') return;
    var button = $('#explain-more');
    button.disabled = true;
    var seq = state.seq;
    api(explainUrl(route, ex.next)).then(function (data) {
      if (seq !== state.seq) return;
      var firstNew = (data.rows || [])[0];
      ex.next = data.next_offset;
      appendRows(route, data.rows || []);
      pagingText(data);
      button.disabled = false;
      if (button.hidden && firstNew) {
        var link = $('#explain-rows tr[data-position="' + firstNew.position + '"] a');
        if (link) link.focus();
      }
    }, function (e) { button.disabled = false; failed(e, seq); });
  }

  /* ---------- one event ---------- */

  function openEvent(route, seq) {
    var panel = $('#event');
    var position = route.position;
    setText('#event-title', 'Event at position ' + count(position));
    var back = $('[data-back]', panel);
    var fromExplain = state.explain && state.explain.key && state.explain.key.indexOf(keyOf(route) + '|') === 0;
    if (fromExplain) {
      var measure = state.explain.key.slice(keyOf(route).length + 1);
      back.setAttribute('href', hashFor(route, { view: 'explain', measure: measure, position: null }));
      back.textContent = 'Back to the explanation';
    } else {
      back.textContent = 'Back to the scorecard';
    }
    $('#event-note').hidden = true;
    return api('/v1/events?from=' + position + '&limit=1').then(function (page) {
      if (seq !== state.seq) return;
      var e = (page.events || [])[0];
      if (!e || e.position !== position) throw new ApiError(404, { detail: 'The log has no event at position ' + position + '.' });
      fillEvent({
        position: e.position, event_type: e.event_type, stream: e.stream_id, occurred_at: e.occurred_at,
        recorded_at: e.recorded_at, actor: e.actor, event_id: e.event_id, hash: e.hash,
        payload: e.payload !== undefined ? e.payload : (e.payload_hex ? 'hex ' + e.payload_hex : null),
        metadata: e.metadata !== undefined ? e.metadata : null
      });
    }, function (error) {
      if (error.status !== 403) throw error;
      // Without read_log: what the explanation recorded of the event.
      var r = state.rows[position];
      if (!r) throw error;
      var note = $('#event-note');
      note.textContent = 'The full event is not shown: ' + error.message + ' These are the fields the explanation recorded.';
      note.hidden = false;
      fillEvent({
        position: r.position, event_type: r.event_type, stream: r.stream, occurred_at: r.occurred_at,
        recorded_at: r.recorded_at, actor: null, event_id: r.event_id, hash: null,
        payload: { period: r.period, dims: r.dims, input: r.input, decision: r.decision, rule: r.rule,
          numerator: r.numerator, denominator: r.denominator, value: r.value },
        metadata: null
      });
    });
  }

  function fillEvent(e) {
    var panel = $('#event');
    setText('[data-field="position"]', e.position, panel);
    setText('[data-field="event-type"]', e.event_type || '', panel);
    setText('[data-field="stream"]', e.stream || '', panel);
    setText('[data-field="occurred-at"]', e.occurred_at || '', panel);
    setText('[data-field="recorded-at"]', e.recorded_at || '', panel);
    setText('[data-field="actor"]', e.actor || '—', panel);
    setText('[data-field="event-id"]', e.event_id || '', panel);
    setText('[data-field="hash"]', e.hash || '—', panel);
    setText('[data-field="payload"]', e.payload == null ? '—' : (typeof e.payload === 'string' ? e.payload : JSON.stringify(e.payload, null, 2)), panel);
    var hasMeta = e.metadata != null;
    $('[data-field="metadata-title"]', panel).hidden = !hasMeta;
    $('[data-field="metadata"]', panel).hidden = !hasMeta;
    setText('[data-field="metadata"]', hasMeta ? JSON.stringify(e.metadata, null, 2) : '', panel);
  }

  /* ---------- live updates ---------- */

  function setLive(value) {
    state.feed.state = value;
    var el = $('#live');
    el.setAttribute('data-state', value);
    el.textContent = value;
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  var feedStarted = false;
  function startFeedOnce() {
    if (feedStarted) return;
    feedStarted = true;
    runFeed();
  }
  function stopFeed() {
    state.feed.generation++;
    if (state.feed.controller) state.feed.controller.abort();
    if (state.feed.poll) { clearInterval(state.feed.poll); state.feed.poll = null; }
    feedStarted = false;
    setLive('off');
  }
  function restartFeed() {
    if (!feedStarted) return;
    stopFeed();
  }

  function runFeed() {
    var generation = ++state.feed.generation;
    var feed = state.feed;
    function current() { return generation === feed.generation; }
    function connect() {
      if (!current()) return;
      var controller = new AbortController();
      feed.controller = controller;
      var extra = { Accept: 'text/event-stream' };
      var url = '/v1/feed';
      if (feed.lastId != null) extra['Last-Event-ID'] = String(feed.lastId);
      else if (state.view && state.view.log && !state.view.as_of) url += '?from=' + (Number(state.view.log.position) + 1);
      fetch(url, { headers: headers(extra), signal: controller.signal, cache: 'no-store', credentials: 'same-origin' })
        .then(function (response) {
          if (!current()) { controller.abort(); return 'stopped'; }
          if (response.status === 403 || response.status === 404) { startPolling(); return 'stopped'; }
          if (response.status === 401) { setLive('off'); return 'stopped'; }
          if (!response.ok || !response.body) throw new Error('feed answered ' + response.status);
          setLive('live');
          feed.backoff = BACKOFF_MIN_MS;
          if (state.viewStale) scheduleRefresh();
          return readSse(response.body, onMessage, current).then(function () { return 'ended'; });
        })
        .catch(function () { return 'failed'; })
        .then(function (outcome) {
          if (outcome === 'stopped' || !current()) return;
          setLive('reconnecting');
          var wait = feed.backoff + Math.floor(Math.random() * 250);
          feed.backoff = Math.min(feed.backoff * 2, BACKOFF_MAX_MS);
          return sleep(wait).then(connect);
        });
    }
    connect();
  }

  /* Server-Sent Events over a fetch body: `id:`, `event:`, `data:`; a blank line ends a
     message; lines starting with `:` are keep-alive comments. */
  function readSse(body, onEvent, current) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = '';
    var message = { id: null, event: '', data: [] };
    function line(text) {
      if (text === '') {
        if (message.data.length || message.event) {
          onEvent({ id: message.id, event: message.event || 'message', data: message.data.join('\n') });
        }
        message = { id: null, event: '', data: [] };
        return;
      }
      if (text.charAt(0) === ':') return;
      var colon = text.indexOf(':');
      var field = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? '' : text.slice(colon + 1);
      if (value.charAt(0) === ' ') value = value.slice(1);
      if (field === 'id') message.id = value;
      else if (field === 'event') message.event = value;
      else if (field === 'data') message.data.push(value);
    }
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done || !current()) { try { reader.cancel(); } catch (e) { /* closed */ } return; }
        buffer += decoder.decode(chunk.value, { stream: true });
        for (;;) {
          var m = /\r\n|\r|\n/.exec(buffer);
          if (!m) break;
          // A lone '\r' at the end may be the first half of '\r\n': wait for the next chunk.
          if (m[0] === '\r' && m.index === buffer.length - 1) break;
          line(buffer.slice(0, m.index));
          buffer = buffer.slice(m.index + m[0].length);
        }
        return pump();
      });
    }
    return pump();
  }

  function onMessage(msg) {
    if (msg.event === 'error') return; // the server ends the feed after it; reconnect resumes
    if (msg.id != null && msg.id !== '') state.feed.lastId = msg.id;
    stats.events++;
    mark('event');
    if (msg.event === 'ScorecardStatusChanged') {
      try {
        var e = JSON.parse(msg.data);
        var p = e.payload || e;
        var change = {
          position: e.position != null ? e.position : Number(msg.id), recorded_at: e.recorded_at,
          node: p.node, measure: p.measure, from: p.from, to: p.to,
          actual_display: p.actual_display || (p.actual && p.actual.display) || null
        };
        if (visibleNode(change.node)) { mergeChanges([change], true); renderChanges(); }
      } catch (err) { /* a malformed message is skipped */ }
    }
    scheduleRefresh();
  }

  /* The feed carries every node's changes: show the open node's and its children's. */
  function visibleNode(id) {
    var node = state.view && state.view.node;
    if (!node || !id) return !id;
    if (node.id === id) return true;
    return (node.children || []).some(function (c) { return c.id === id; });
  }

  function startPolling() {
    setLive('polling');
    if (state.feed.poll) return;
    state.feed.poll = setInterval(function () { state.viewStale = true; scheduleRefresh(); }, POLL_MS);
  }

  function scheduleRefresh() {
    state.viewStale = true;
    var route = state.route;
    if (!route || !route.node) return;
    if (route.view === 'explain') {
      if (state.explain) state.explain.stale = true;
      $('#explain-stale').hidden = false;
      return;
    }
    if (route.view !== 'scorecard' || main.getAttribute('data-state') !== 'ready') return;
    if (state.refresh.timer) return;
    state.refresh.timer = setTimeout(runRefresh, DEBOUNCE_MS);
  }

  function runRefresh() {
    var r = state.refresh;
    r.timer = null;
    if (r.inFlight) { r.dirty = true; return; }
    r.inFlight = true;
    r.dirty = false;
    var seq = state.seq;
    var route = state.route;
    var key = keyOf(route);
    stats.refreshes++;
    mark('request');
    api(viewUrl(route)).then(function (view) {
      mark('answer');
      if (seq === state.seq && route.view === 'scorecard') renderView(view, key, true);
    }, function (e) {
      if (e.status === 401 || e.status === 403 || e.status === 404) failed(e, seq);
      // Busy or unreachable: try again shortly (the next event or poll would too).
      else setTimeout(function () { if (seq === state.seq) scheduleRefresh(); }, RETRY_MS * 2);
    }).then(function () {
      r.inFlight = false;
      if (r.dirty) { r.dirty = false; scheduleRefresh(); }
    });
  }

  /* ---------- wiring ---------- */

  $('#login').addEventListener('submit', function (event) {
    event.preventDefault();
    var value = $('#login-token').value.trim();
    if (!value) return;
    storeToken(value);
    $('#login-token').value = '';
    $('#login').hidden = true;
    stopFeed();
    navigate();
  });
  $('#explain-more').addEventListener('click', moreRows);
  $('#changes-all').addEventListener('click', function () {
    state.allChanges = !state.allChanges;
    renderChanges();
  });
  $('#explain-reload').addEventListener('click', function () {
    if (state.explain) state.explain.stale = true;
    navigate();
  });
  $('#skip').addEventListener('click', function (event) {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', function () { navigate(0); });
  navigate();
})();
