// The price list: what a caller pays per model. Signed out it shows the public list for a chosen group;
// signed in, the user's own group, unpriced models included (keys with a limit cannot call those).
import { get } from '../api.js';
import { money } from '../format.js';
import { t } from '../i18n.js';
import { badge, field, h, loading, pageHeader, table } from '../ui.js';

// Amounts other than the per-token ones, shown together in one column.
const OTHER = ['per_request', 'per_image', 'per_second', 'per_mchar'];

export async function render(page, { me }) {
  const list = h('div');
  page.append(pageHeader(t('nav.pricing')), h('p', { class: 'muted' }, t('pricing.intro')));
  if (me) {
    page.append(list);
    await loading(list, async () => {
      const prices = await get('/api/me/prices');
      return h('div', {}, groupNote(prices), priceTable(prices.data));
    });
    return;
  }
  const show = (group) => loading(list, async () => {
    const prices = await get('/api/public/prices', { group });
    return h('div', {}, groupPicker(prices, show), groupNote(prices), priceTable(prices.data));
  });
  page.append(list);
  await show('');
}

function groupNote(prices) {
  return h('p', { class: 'muted small' }, t('pricing.groupNote', { group: prices.group, ratio: prices.ratio_ppm / 1_000_000 }));
}

function groupPicker(prices, show) {
  if (prices.groups.length < 2) return null;
  const picker = field({
    name: 'group',
    label: t('pricing.group'),
    type: 'select',
    value: prices.group,
    options: prices.groups.map((group) => [group.name, `${group.name} (×${group.ratio_ppm / 1_000_000})`]),
  });
  picker.querySelector('select').addEventListener('change', (event) => show(event.target.value));
  return picker;
}

export function priceTable(rows) {
  return table(
    [
      { label: t('prices.model'), class: 'keep', value: (row) => h('code', {}, row.model) },
      { label: t('prices.input_per_mtok'), value: (row) => amount(row, 'input_per_mtok') },
      { label: t('prices.output_per_mtok'), value: (row) => amount(row, 'output_per_mtok') },
      { label: t('pricing.cache'), value: cache },
      { label: t('pricing.other'), value: other },
    ],
    rows,
    { empty: t('pricing.none'), label: t('nav.pricing') },
  );
}

function amount(row, name) {
  if (!row.priced) return badge(t('pricing.unpriced'), 'off');
  return money(row[`${name}_micros`]);
}

function cache(row) {
  return amountList(row, ['cached_input_per_mtok', 'cache_write_per_mtok']);
}

function other(row) {
  return amountList(row, OTHER);
}

/** The amounts among `names` that the row's price sets, each with its unit; '—' when none is. */
function amountList(row, names) {
  const set = row.priced ? names.filter((name) => row[`${name}_micros`] !== null) : [];
  if (!set.length) return '—';
  return h(
    'ul',
    { class: 'inline-list' },
    set.map((name) => h('li', {}, h('span', { class: 'muted' }, t(`prices.${name}`)), ' ', money(row[`${name}_micros`]))),
  );
}
