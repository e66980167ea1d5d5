// Dashboard: balance, the period's totals, and requests and spend per day stacked by model.
import { get } from '../api.js';
import { stackedBars } from '../chart.js';
import { millis, money, number, percent } from '../format.js';
import { t } from '../i18n.js';
import { field, h, loading, pageHeader } from '../ui.js';

const PERIODS = [7, 14, 30, 90];

export async function render(page, { me }) {
  const admin = me.role === 'admin';
  const controls = h(
    'form',
    { class: 'filters', onsubmit: (event) => event.preventDefault() },
    field({
      name: 'days',
      label: t('dashboard.period'),
      type: 'select',
      value: '14',
      options: PERIODS.map((days) => [String(days), t('dashboard.days', { days })]),
    }),
    admin
      ? field({
          name: 'scope',
          label: t('common.scope'),
          type: 'select',
          value: 'all', // an administrator's own traffic is usually nothing: start on everyone's
          options: [
            ['me', t('common.scopeMe')],
            ['all', t('common.scopeAll')],
          ],
        })
      : null,
  );
  const body = h('div');
  const show = () =>
    loading(body, () => view(me, controls.elements.days.value, controls.elements.scope?.value ?? 'me'));
  controls.addEventListener('change', show);
  page.append(pageHeader(t('nav.dashboard')), controls, body);
  await show();
}

async function view(me, days, scope) {
  const stats = await get(scope === 'all' ? '/api/stats' : '/api/me/stats', { days });
  const totals = stats.totals;
  const tile = (label, value, note) =>
    h(
      'div',
      { class: 'tile' },
      h('span', { class: 'tile-label' }, label),
      h('strong', { class: 'tile-value' }, value),
      note ? h('span', { class: 'muted small' }, note) : null,
    );
  const balance = me.unlimited ? t('common.unlimited') : money(me.available_micros ?? me.balance_micros);
  const balanceTile =
    scope === 'all'
      ? tile(t('dashboard.usersBalance'), money(stats.users_balance_micros), t('dashboard.usersBalanceNote'))
      : tile(t('dashboard.balance'), balance);
  return h(
    'div',
    {},
    h(
      'section',
      { class: 'tiles', 'aria-label': t('dashboard.totals') },
      balanceTile,
      tile(t('dashboard.requests'), number(totals.requests), t('dashboard.days', { days })),
      tile(t('dashboard.spend'), money(totals.cost_micros), t('dashboard.days', { days })),
      tile(
        t('dashboard.errorRate'),
        percent(totals.error_rate),
        t('dashboard.errors', { count: number(totals.errors) }),
      ),
      tile(t('dashboard.p50'), millis(totals.p50_latency_ms)),
      tile(
        t('dashboard.tokens'),
        number(totals.prompt_tokens + totals.completion_tokens),
        t('dashboard.tokenSplit', {
          prompt: number(totals.prompt_tokens),
          completion: number(totals.completion_tokens),
        }),
      ),
    ),
    h(
      'div',
      { class: 'charts' },
      chart(t('dashboard.requestsPerDay'), stats, 'requests', number),
      chart(t('dashboard.spendPerDay'), stats, 'cost_micros', money),
    ),
  );
}

/** One chart of `stats`: the busiest models first in both, so each model has one colour. */
function chart(title, stats, measure, format) {
  const total = (s) => s.requests.reduce((a, b) => a + b, 0);
  const models = [...stats.series].sort((a, b) => total(b) - total(a) || a.model.localeCompare(b.model));
  return stackedBars({
    title,
    days: stats.days,
    format,
    series: models.map((s) => ({ label: s.model || '—', values: s[measure] })),
    otherLabel: t('dashboard.other'),
    emptyLabel: t('dashboard.noData'),
  });
}
