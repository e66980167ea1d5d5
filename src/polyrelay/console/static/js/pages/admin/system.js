// System: version, database and Redis health, the task poller, queue depths (GET /api/system).
import { get } from '../../api.js';
import { dateTime, millis, number } from '../../format.js';
import { t } from '../../i18n.js';
import { badge, button, facts, h, loading, pageHeader } from '../../ui.js';

export async function render(page) {
  const body = h('div');
  const refresh = () => loading(body, view);
  page.append(pageHeader(t('nav.admin/system'), button(t('common.refresh'), refresh)), body);
  await refresh();
}

const health = (ok) => (ok ? badge(t('system.ok'), 'ok') : badge(t('system.failing'), 'error'));

/** The two largest units: "3 d 4 h", "4 h 5 min", "5 min 6 s". */
function uptime(seconds) {
  const parts = {
    days: Math.floor(seconds / 86_400),
    hours: Math.floor((seconds % 86_400) / 3600),
    minutes: Math.floor((seconds % 3600) / 60),
    seconds: Math.floor(seconds % 60),
  };
  if (parts.days) return t('system.uptimeDays', parts);
  return parts.hours ? t('system.uptimeHours', parts) : t('system.uptimeMinutes', parts);
}

async function view() {
  const s = await get('/api/system');
  const card = (title, pairs) => h('section', { class: 'card' }, h('h2', {}, title), facts(pairs));
  return h(
    'div',
    { class: 'cards' },
    card(t('system.gateway'), [
      [t('system.version'), s.version],
      [t('system.uptime'), uptime(s.uptime_s)],
      [t('system.checked'), dateTime(Date.now())],
    ]),
    card(t('system.database'), [
      [t('system.dialect'), s.database.dialect],
      [t('common.status'), health(s.database.ok)],
      [t('system.latency'), millis(s.database.latency_ms)],
    ]),
    card(
      'Redis',
      s.redis.configured
        ? [
            [t('common.status'), health(s.redis.ok)],
            [t('system.latency'), millis(s.redis.latency_ms)],
          ]
        : [[t('common.status'), badge(t('system.notConfigured'), 'off')]],
    ),
    card(t('system.poller'), [
      [
        t('common.status'),
        s.tasks.poller_running ? badge(t('system.running'), 'ok') : badge(t('system.stopped'), 'error'),
      ],
      [
        t('system.lastRound'),
        s.tasks.last_round_at ? `${dateTime(s.tasks.last_round_at)} (${millis(s.tasks.last_round_ms)})` : '—',
      ],
      [t('system.due'), number(s.tasks.due)],
      ...Object.entries(s.tasks.by_status).map(([status, count]) => [t(`tasks.state.${status}`), number(count)]),
    ]),
    card(t('system.queues'), [
      [t('system.writer'), number(s.writer.queued)],
      [t('system.callbacks'), number(s.callbacks.pending)],
    ]),
    card(t('system.channels'), [
      [t('system.total'), number(s.channels.total)],
      [t('common.enabled'), number(s.channels.enabled)],
      [t('channels.coolingDown'), number(s.channels.cooling_down)],
    ]),
  );
}
