// Consulta's calendar page: week and agenda views of the viewer's appointments; doctors book,
// reschedule and cancel. Signs in with a sign-in link (#link=…), or inside Element with the widget
// API's OpenID token, then calls /_consulta/v1 with `Authorization: Session …`.
// Every value from the server reaches the page through textContent, never as markup.
'use strict';

(() => {
  const API = new URL('../v1/', window.location.href);
  const SAVED = 'consulta.calendar.session';
  const $ = (id) => document.getElementById(id);

  const state = {
    session: null,
    me: null,
    view: 'week',
    weekStart: null,
    patients: [],
    editing: null,
    cancelling: null,
    lastBooked: null,
    // Renders started: one whose answer comes after a later one's started is dropped, or a
    // quick "Next week" after another change would show one week's appointments under another's
    // days.
    renders: 0,
  };

  // ---- Theme: Element passes its theme; otherwise follow the system. ----
  const params = new URLSearchParams(window.location.search);
  const theme = params.get('theme') || '';
  const dark = theme.includes('dark') ||
    (!theme.includes('light') && window.matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';

  // ---- Talking to the appservice. ----
  async function call(path, { method = 'GET', body, auth } = {}) {
    const headers = {};
    if (auth !== undefined) {
      if (auth) headers.Authorization = auth;
    } else if (state.session) {
      headers.Authorization = `Session ${state.session}`;
    }
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(new URL(path, API), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = new Error((data && data.detail) || `The server answered ${response.status}`);
      error.status = response.status;
      error.code = data && data.code;
      throw error;
    }
    return data;
  }

  // ---- Signing in. ----
  // matrix-widget-api's minified browser bundle (1.19.0) sets `mxwidgets` to a function that returns
  // the module, where its unminified one sets the module itself: accept both.
  function widgetLibrary() {
    const lib = window.mxwidgets;
    if (typeof lib === 'function') return lib();
    if (lib && lib.WidgetApi) return lib;
    throw new Error('The widget API did not load');
  }

  function widgetOpenId() {
    const widgetId = params.get('widgetId');
    const parentUrl = params.get('parentUrl');
    const lib = widgetLibrary();
    const origin = parentUrl ? new URL(parentUrl).origin : null;
    const widget = new lib.WidgetApi(widgetId, origin);
    return new Promise((resolve, reject) => {
      const timer = window.setTimeout(
        () => reject(new Error('Element did not answer the calendar. Close and reopen it.')),
        30000,
      );
      widget.on('ready', async () => {
        try {
          const credential = await widget.requestOpenIDConnectToken();
          window.clearTimeout(timer);
          resolve(credential.access_token);
        } catch (e) {
          window.clearTimeout(timer);
          reject(new Error('Element did not let the calendar confirm who you are.'));
        }
      });
      widget.start();
    });
  }

  async function signIn() {
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const link = fragment.get('link');
    if (link) {
      // The token leaves the address bar and history at once; it works only once anyway.
      window.history.replaceState(null, '', window.location.pathname + window.location.search);
      return adopt(await call('calendar/session', { method: 'POST', body: { link }, auth: null }), true);
    }
    if (params.get('widgetId')) {
      const token = await widgetOpenId();
      return adopt(await call('calendar/session', { method: 'POST', auth: `OpenID ${token}` }), false);
    }
    const saved = window.sessionStorage.getItem(SAVED);
    if (saved) {
      state.session = saved;
      try {
        return adopt({ ...(await call('calendar/session')), session: saved }, false);
      } catch (e) {
        window.sessionStorage.removeItem(SAVED);
        state.session = null;
        if (e.status !== 401) throw e;
      }
    }
    const error = new Error(
      'Open this calendar from your Care desk in Element, or send !calendar to the clinic assistant for a sign-in link.',
    );
    error.signedOut = true;
    throw error;
  }

  function adopt(context, remember) {
    state.session = context.session;
    state.me = context;
    if (remember) window.sessionStorage.setItem(SAVED, context.session);
    state.weekStart = mondayOf(context.today);
    return context;
  }

  // ---- Dates: plain YYYY-MM-DD strings in the clinic's zone, computed on UTC dates. ----
  function toDate(iso) {
    const [y, m, d] = iso.split('-').map(Number);
    return new Date(Date.UTC(y, m - 1, d));
  }
  function addDays(iso, n) {
    const date = toDate(iso);
    date.setUTCDate(date.getUTCDate() + n);
    return date.toISOString().slice(0, 10);
  }
  function mondayOf(iso) {
    return addDays(iso, -((toDate(iso).getUTCDay() + 6) % 7));
  }
  function dayLabel(iso, long) {
    return toDate(iso).toLocaleDateString(undefined, {
      weekday: long ? 'long' : 'short',
      day: 'numeric',
      month: long ? 'long' : 'short',
      timeZone: 'UTC',
    });
  }
  const localDate = (a) => a.start_local.slice(0, 10);
  const localTime = (s) => s.slice(11, 16);
  const viewerZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

  // ---- Rendering. ----
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  const isDoctor = () => state.me && (state.me.role === 'doctor' || state.me.role === 'admin');

  function describe(a) {
    const kind = a.kind === 'video' ? 'Video consultation' : 'In person at the clinic';
    const other = a.doctor === state.me.user_id ? a.patient : a.doctor;
    return { kind, other };
  }

  function card(a) {
    const { kind, other } = describe(a);
    const time = `${localTime(a.start_local)}–${localTime(a.end_local)}`;
    const status = a.status === 'scheduled' ? '' : ` (${a.status.replace('_', '-')})`;
    const item = el('li', {
      class: `appt kind-${a.kind} status-${a.status}`,
      'data-id': a.id,
      'data-start': a.start_local,
      'aria-label': `${time}, ${kind}${status}, with ${other}`,
    });
    item.append(el('p', { class: 'time', text: time }));
    if (viewerZone && viewerZone !== state.me.time_zone) {
      const mine = new Date(a.start).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      item.append(el('p', { class: 'muted', text: `${mine} your time` }));
    }
    item.append(el('p', { class: 'title', text: `${kind}${status}` }));
    item.append(el('p', { class: 'with', text: `with ${other}` }));
    if (a.reason) item.append(el('p', { class: 'reason', text: a.reason }));
    if (isDoctor() && a.status === 'scheduled' && a.doctor === state.me.user_id) {
      item.append(el('div', { class: 'actions' },
        el('button', { type: 'button', text: 'Reschedule', 'aria-label': `Reschedule ${time} with ${other}`, onclick: () => openEditor(a) }),
        el('button', { type: 'button', text: 'Cancel', 'aria-label': `Cancel ${time} with ${other}`, onclick: () => openConfirm(a) }),
      ));
    }
    return item;
  }

  function dayBlock(iso, list, headingLevel) {
    const today = iso === state.me.today;
    const heading = el(headingLevel, { id: `day-${iso}`, text: dayLabel(iso, state.view === 'agenda') });
    if (today) heading.append(el('span', { class: 'today', text: 'Today' }));
    const block = el('section', { class: 'day', 'aria-labelledby': `day-${iso}` }, heading);
    if (today) block.setAttribute('aria-current', 'date');
    if (list.length) block.append(el('ol', { class: 'slots' }, ...list.map(card)));
    else block.append(el('p', { class: 'empty', text: 'No appointments' }));
    return block;
  }

  async function render() {
    const week = $('week');
    const agenda = $('agenda');
    const weekView = state.view === 'week';
    $('view-week').setAttribute('aria-pressed', String(weekView));
    $('view-agenda').setAttribute('aria-pressed', String(!weekView));
    $('week-nav').hidden = !weekView;
    week.hidden = !weekView;
    agenda.hidden = weekView;
    $('zone').textContent = `Times are the clinic's (${state.me.time_zone}).`;
    state.renders += 1;
    const thisRender = state.renders;
    if (weekView) {
      const weekStart = state.weekStart;
      const end = addDays(weekStart, 7);
      const data = await call(`appointments?from=${weekStart}T00:00&to=${end}T00:00`);
      if (thisRender !== state.renders) return;
      $('range').textContent = `Week of ${dayLabel(weekStart, true)}`;
      const days = [];
      for (let i = 0; i < 7; i += 1) {
        const iso = addDays(weekStart, i);
        days.push(dayBlock(iso, data.appointments.filter((a) => localDate(a) === iso), 'h3'));
      }
      week.replaceChildren(...days);
      announce(`${data.appointments.length} appointment${data.appointments.length === 1 ? '' : 's'} this week.`);
    } else {
      const data = await call('appointments/next?limit=50');
      if (thisRender !== state.renders) return;
      $('range').textContent = 'Coming up';
      const byDay = new Map();
      for (const a of data.appointments) {
        const iso = localDate(a);
        if (!byDay.has(iso)) byDay.set(iso, []);
        byDay.get(iso).push(a);
      }
      const blocks = [...byDay].map(([iso, list]) => dayBlock(iso, list, 'h3'));
      agenda.replaceChildren(...(blocks.length ? blocks : [el('p', { class: 'empty', text: 'No appointments coming up.' })]));
      announce(`${data.appointments.length} appointment${data.appointments.length === 1 ? '' : 's'} coming up.`);
    }
  }

  function announce(text) {
    $('status').textContent = text;
  }

  function showError(e) {
    const box = $('error');
    box.textContent = e.message;
    box.hidden = false;
  }

  async function refresh() {
    $('error').hidden = true;
    try {
      await render();
    } catch (e) {
      showError(e);
    }
  }

  // ---- Booking and rescheduling. ----
  function openEditor(appointment) {
    state.editing = appointment || null;
    const booking = !appointment;
    $('editor-title').textContent = booking ? 'Book an appointment' : 'Reschedule the appointment';
    $('editor-save').textContent = booking ? 'Book' : 'Save';
    $('f-patient').disabled = !booking;
    $('f-patient').value = booking ? '' : appointment.patient;
    $('f-date').value = booking ? (state.weekStart > state.me.today ? state.weekStart : state.me.today) : localDate(appointment);
    $('f-time').value = booking ? '09:00' : localTime(appointment.start_local);
    $('f-length').value = String(booking ? 30 : appointment.duration_minutes);
    if (!$('f-length').value) $('f-length').value = '30';
    for (const radio of document.querySelectorAll('input[name="kind"]')) {
      radio.checked = radio.value === (booking ? 'video' : appointment.kind);
    }
    $('f-reason').value = booking ? '' : appointment.reason || '';
    $('editor-error').hidden = true;
    $('editor').showModal();
    (booking ? $('f-patient') : $('f-date')).focus();
  }

  async function saveEditor(event) {
    event.preventDefault();
    const fail = (message) => {
      $('editor-error').textContent = message;
      $('editor-error').hidden = false;
    };
    const patient = $('f-patient').value.trim();
    const date = $('f-date').value;
    const time = $('f-time').value;
    if (!state.editing && !/^@[^:\s]+:\S+$/.test(patient)) return fail('Give the patient as a Matrix ID, like @name:clinic.example.');
    if (!date || !time) return fail('Give a date and a time.');
    const body = {
      start: `${date}T${time}`,
      duration_minutes: Number($('f-length').value),
      kind: document.querySelector('input[name="kind"]:checked').value,
      reason: $('f-reason').value.trim(),
    };
    $('editor-save').disabled = true;
    try {
      let saved;
      if (state.editing) {
        saved = await call(`appointments/${state.editing.id}`, { method: 'PATCH', body });
      } else {
        saved = await call('appointments', { method: 'POST', body: { ...body, patient } });
      }
      $('editor').close();
      state.lastBooked = saved.id;
      state.view = 'week';
      state.weekStart = mondayOf(localDate(saved));
      await refresh();
      announce(`${state.editing ? 'Moved to' : 'Booked:'} ${dayLabel(localDate(saved), true)} at ${localTime(saved.start_local)}. The clinic assistant tells both of you.`);
      const placed = document.querySelector(`.appt[data-id="${saved.id}"]`);
      if (placed) {
        placed.setAttribute('tabindex', '-1');
        placed.focus();
      }
    } catch (e) {
      fail(e.message);
    } finally {
      $('editor-save').disabled = false;
    }
  }

  // ---- Cancelling. ----
  function openConfirm(appointment) {
    state.cancelling = appointment;
    const { kind, other } = describe(appointment);
    $('confirm-what').textContent =
      `${dayLabel(localDate(appointment), true)}, ${localTime(appointment.start_local)}: ${kind} with ${other}.`;
    $('confirm-error').hidden = true;
    $('confirm').showModal();
    $('confirm-keep').focus();
  }

  async function confirmCancel(event) {
    event.preventDefault();
    try {
      await call(`appointments/${state.cancelling.id}/cancel`, { method: 'POST', body: {} });
      $('confirm').close();
      await refresh();
      announce('The appointment is cancelled. The clinic assistant tells both of you.');
    } catch (e) {
      $('confirm-error').textContent = e.message;
      $('confirm-error').hidden = false;
    }
  }

  // ---- The iCal feed. ----
  async function newFeed() {
    try {
      const feed = await call('calendar/feed', { method: 'POST' });
      $('feed-url').value = feed.url;
      $('feed-url').focus();
      $('feed-url').select();
      announce('Your new feed link is ready. Any earlier link no longer works.');
    } catch (e) {
      showError(e);
    }
  }

  async function stopFeed() {
    try {
      const answer = await call('calendar/feed', { method: 'DELETE' });
      $('feed-url').value = '';
      announce(answer.revoked ? 'Your feed link no longer works.' : 'You had no feed link.');
    } catch (e) {
      showError(e);
    }
  }

  async function patientsOfDoctor() {
    try {
      const data = await call('consultations');
      const ids = [...new Set(data.consultations.map((c) => c.with))].sort();
      $('patients').replaceChildren(...ids.map((id) => el('option', { value: id })));
    } catch {
      // Suggestions only; typing the ID still works.
    }
  }

  // ---- Start. ----
  function wire() {
    $('view-week').addEventListener('click', () => { state.view = 'week'; refresh(); });
    $('view-agenda').addEventListener('click', () => { state.view = 'agenda'; refresh(); });
    $('prev').addEventListener('click', () => { state.weekStart = addDays(state.weekStart, -7); refresh(); });
    $('next').addEventListener('click', () => { state.weekStart = addDays(state.weekStart, 7); refresh(); });
    $('this-week').addEventListener('click', () => { state.weekStart = mondayOf(state.me.today); refresh(); });
    $('book').addEventListener('click', () => openEditor(null));
    $('editor-form').addEventListener('submit', saveEditor);
    $('editor-close').addEventListener('click', () => $('editor').close());
    $('confirm-form').addEventListener('submit', confirmCancel);
    $('confirm-keep').addEventListener('click', () => $('confirm').close());
    $('feed-new').addEventListener('click', newFeed);
    $('feed-off').addEventListener('click', stopFeed);
  }

  async function start() {
    wire();
    try {
      await signIn();
    } catch (e) {
      announce('');
      showError(e);
      document.body.dataset.state = 'signed-out';
      return;
    }
    $('who').textContent = `Signed in as ${state.me.user_id}`;
    $('book').hidden = !isDoctor();
    $('calendar').hidden = false;
    if (isDoctor()) patientsOfDoctor();
    await refresh();
    document.body.dataset.state = 'ready';
  }

  start();
})();
