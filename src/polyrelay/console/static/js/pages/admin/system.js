// System: version, database and Redis health, the task poller, queue depths (GET /api/system).
import { get } from '../../api.js';
import { dateTime, millis, money, number, percent } from '../../format.js';
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
  const [s, accounts] = await Promise.all([get('/api/system'), get('/api/settings/accounts')]);
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
    card(t('system.signup'), signupFacts(accounts)),
    card(t('system.channels'), [
      [t('system.total'), number(s.channels.total)],
      [t('common.enabled'), number(s.channels.enabled)],
      [t('channels.coolingDown'), number(s.channels.cooling_down)],
    ]),
  );
}

/** The sign-up and invitation settings in force (config file; see docs/platform.md). */
function signupFacts({ signup, invitations, mail }) {
  const list = (items) => (items.length ? items.join(', ') : '—');
  return [
    [t('system.signupMode'), t(`system.signupMode.${signup.mode}`)],
    [t('system.verification'), signup.require_email_verification ? t('health.yes') : t('health.no')],
    [t('system.mail'), mail.configured ? `${mail.host} (${mail.from})` : badge(t('system.notConfigured'), 'off')],
    [t('system.defaultGroup'), signup.default_group],
    [t('system.startingBalance'), money(Math.round(signup.starting_balance_usd * 1e6))],
    [t('system.allowedDomains'), list(signup.allowed_domains)],
    [
      t('system.deniedDomains'),
      list([...signup.denied_domains, ...(signup.deny_disposable ? [t('system.disposable')] : [])]),
    ],
    [t('system.perIp'), number(signup.per_ip_per_hour)],
    [
      t('system.inviteRewards'),
      invitations.enabled
        ? t('system.inviteRewardsText', {
            fixed: money(Math.round(invitations.reward_fixed_usd * 1e6)),
            percent: percent(invitations.reward_share_of_first_topup),
            cap: number(invitations.max_rewarded_invites_per_user),
          })
        : badge(t('system.notConfigured'), 'off'),
    ],
  ];
}
