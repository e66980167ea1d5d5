// Every user's top-up orders, filtered by status and user; "review" holds money that arrived but was
// not credited automatically (late, or not what was ordered): settle it by hand (docs/platform.md).
import { get } from '../../api.js';
import { t } from '../../i18n.js';
import { field, h, loading, pageHeader, pager, readForm } from '../../ui.js';
import { orderTable } from '../topup.js';

const PAGE = 100;
const STATUSES = ['pending', 'paid', 'expired', 'failed', 'review'];

export async function render(page, { params }) {
  const users = (await get('/api/users', { limit: 1000 })).data;
  const names = new Map(users.map((u) => [u.id, u.name]));
  const filters = h(
    'form',
    { class: 'filters', 'aria-label': t('orders.filters') },
    field({
      name: 'status',
      label: t('common.status'),
      type: 'select',
      value: params.get('status') ?? '',
      options: [['', t('orders.anyStatus')], ...STATUSES.map((s) => [s, t(`orders.status.${s}`)])],
    }),
    field({
      name: 'user_id',
      label: t('orders.user'),
      type: 'select',
      value: params.get('user_id') ?? '',
      options: [['', t('logs.anyUser')], ...users.map((u) => [String(u.id), u.name])],
    }),
    h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'primary' }, t('logs.apply'))),
  );
  const results = h('div');
  let offset = 0;
  const show = () =>
    loading(results, async () => {
      const { data } = await get('/api/orders', { ...readForm(filters), limit: PAGE, offset });
      return h(
        'div',
        {},
        orderTable(data, { users: names, label: t('nav.admin/orders') }),
        pager({
          offset,
          limit: PAGE,
          count: data.length,
          onPage: (next) => {
            offset = next;
            show();
          },
        }),
      );
    });
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    offset = 0;
    show();
  });
  page.append(pageHeader(t('nav.admin/orders')), filters, results);
  await show();
}
