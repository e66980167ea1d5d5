// Health: each channel's state (enabled, cooling, disabled), its last probe and event, and the
// trail of disables, enables and probe results (GET /api/health, GET /api/channels/{id}/events);
// the alerts told, a page at a time (GET /api/alerts).
import { get } from '../../api.js';
import { dateTime, millis, number } from '../../format.js';
import { t } from '../../i18n.js';
import { badge, button, facts, h, loading, pageHeader, pager, table } from '../../ui.js';

const STATE_KIND = { enabled: 'ok', cooling: 'busy', disabled: 'error' };
const SEVERITY_KIND = { info: 'ok', warning: 'busy', critical: 'error' };
const ALERTS_PAGE = 20;

export async function render(page) {
  const body = h('div');
  const alerts = h('div');
  let offset = 0;
  const showAlerts = () =>
    loading(alerts, () =>
      alertsView(offset, (next) => {
        offset = next;
        showAlerts();
      }),
    );
  const refresh = () => Promise.all([loading(body, view), showAlerts()]);
  page.append(
    pageHeader(t('nav.admin/health'), button(t('common.refresh'), refresh)),
    body,
    h('h2', {}, t('health.alerts')),
    alerts,
  );
  await refresh();
}

async function alertsView(offset, onPage) {
  const { data, total } = await get('/api/alerts', { limit: ALERTS_PAGE, offset });
  const rows = table(
    [
      { label: t('health.when'), value: (a) => dateTime(a.created_at) },
      { label: t('health.severity'), value: (a) => badge(t(`health.severity.${a.severity}`), SEVERITY_KIND[a.severity]) },
      { label: t('health.subject'), value: (a) => a.subject },
      { label: t('health.userEmailed'), value: (a) => (a.user_emailed ? t('health.yes') : '—') },
    ],
    data,
    {
      empty: t('health.noAlerts'),
      label: t('health.alerts'),
      details: (a) => facts(Object.entries(a.details).map(([name, value]) => [name, String(value)])),
    },
  );
  return h('div', {}, rows, pager({ offset, limit: ALERTS_PAGE, count: data.length, total, onPage }));
}

const state = (name) => badge(t(`health.state.${name}`), STATE_KIND[name] ?? 'neutral');
const eventKind = (kind) => t(`health.event.${kind}`);
const actor = (who) => (who === 'auto' || who === 'probe' ? t(`health.actor.${who}`) : who);

function probe(last) {
  if (!last) return '—';
  const result = last.ok ? badge(t('health.probeOk'), 'ok') : badge(t('health.probeFailed'), 'error');
  return h('span', { title: last.result }, result, ` ${dateTime(last.at)}`);
}

function eventText(event) {
  return event ? `${eventKind(event.kind)} · ${dateTime(event.created_at)}` : '—';
}

async function trail(channel) {
  const { data } = await get(`/api/channels/${channel.id}/events?limit=20`);
  return eventsTable(data, { [channel.id]: channel.name });
}

function eventsTable(events, names) {
  return table(
    [
      { label: t('health.when'), value: (e) => dateTime(e.created_at) },
      { label: t('health.channel'), value: (e) => names[e.channel_id] ?? `#${e.channel_id}` },
      { label: t('health.what'), value: (e) => eventKind(e.kind) },
      { label: t('health.who'), value: (e) => actor(e.actor) },
      { label: t('health.reason'), value: (e) => e.reason },
    ],
    events,
    { empty: t('health.noEvents'), label: t('health.events') },
  );
}

async function view() {
  const health = await get('/api/health');
  const names = Object.fromEntries(health.channels.map((c) => [c.id, c.name]));
  const settings = health.probes;
  const summary = h(
    'section',
    { class: 'card' },
    h('h2', {}, t('health.summary')),
    facts([
      ...['enabled', 'cooling', 'disabled'].map((name) => [state(name), number(health.counts[name])]),
      [
        t('health.probes'),
        settings.enabled
          ? t('health.probeSettings', { interval: settings.interval_s, successes: settings.successes_to_enable })
          : badge(t('health.probesOff'), 'off'),
      ],
    ]),
  );
  const channels = table(
    [
      { label: t('health.channel'), value: (c) => c.name },
      { label: t('common.status'), value: (c) => state(c.state) },
      { label: t('health.probed'), value: (c) => (c.probed ? t('health.yes') : t('health.no')) },
      { label: t('health.lastProbe'), value: (c) => probe(c.last_probe) },
      { label: t('health.latency'), value: (c) => (c.last_probe?.latency_ms == null ? '—' : millis(c.last_probe.latency_ms)) },
      { label: t('health.lastEvent'), value: (c) => eventText(c.last_event) },
      { label: t('health.reason'), value: (c) => c.disabled_reason || '—' },
    ],
    health.channels,
    {
      label: t('health.channels'),
      details: (c) => {
        const box = h('div');
        loading(box, () => trail(c));
        return box;
      },
    },
  );
  return h(
    'div',
    {},
    h('div', { class: 'cards' }, summary),
    h('h2', {}, t('health.channels')),
    channels,
    h('h2', {}, t('health.recent')),
    eventsTable(health.events, names),
  );
}
