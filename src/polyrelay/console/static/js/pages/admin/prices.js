// Prices: per model (exact name, wildcard or "default"), typed in dollars per unit.
import { get, put } from '../../api.js';
import { dollarsToMicros, microsToDollars, money } from '../../format.js';
import { t } from '../../i18n.js';
import { button, deleteButton, field, formDialog, h, loading, pageHeader, table } from '../../ui.js';

// The API's price fields, each "<name>_micros": micro-USD per the unit the name says.
const FIELDS = [
  'input_per_mtok',
  'output_per_mtok',
  'cached_input_per_mtok',
  'cache_write_per_mtok',
  'per_request',
  'per_image',
  'per_second',
  'per_mchar',
];

export async function render(page) {
  const list = h('div');
  const refresh = () => loading(list, () => priceTable(refresh));
  page.append(
    pageHeader(
      t('nav.admin/prices'),
      button(t('prices.create'), () => edit(null, refresh), { kind: 'primary' }),
    ),
    h('p', { class: 'muted' }, t('prices.intro')),
    list,
  );
  await refresh();
}

async function priceTable(refresh) {
  const { data } = await get('/api/prices');
  return table(
    [
      { label: t('prices.model'), value: (row) => h('code', {}, row.model) },
      { label: t('prices.price'), value: summary },
      {
        label: t('common.actions'),
        class: 'row-actions',
        value: (row) => [
          button(t('common.edit'), () => edit(row, refresh), { 'aria-label': `${t('common.edit')} ${row.model}` }),
          deleteButton(t('prices.confirmDelete', { model: row.model }), `/api/prices/${encodeURIComponent(row.model)}`, refresh),
        ],
      },
    ],
    data,
    { empty: t('prices.none'), label: t('nav.admin/prices') },
  );
}

/** Only the fields that are set: "Input / 1M tokens $2.50 · Output / 1M tokens $10.00". */
function summary(row) {
  return h(
    'ul',
    { class: 'inline-list' },
    FIELDS.filter((name) => row[`${name}_micros`] !== null).map((name) =>
      h('li', {}, h('span', { class: 'muted' }, t(`prices.${name}`)), ' ', money(row[`${name}_micros`])),
    ),
  );
}

function edit(row, refresh) {
  const creating = row === null;
  return formDialog({
    title: creating ? t('prices.create') : t('prices.editTitle', { model: row.model }),
    submitLabel: creating ? t('common.create') : t('common.save'),
    wide: true,
    fields: [
      creating ? field({ name: 'model', label: t('prices.model'), required: true, hint: t('prices.modelHint') }) : null,
      h(
        'div',
        { class: 'row' },
        FIELDS.map((name) =>
          field({
            name,
            label: t(`prices.${name}`),
            inputmode: 'decimal',
            value: microsToDollars(row?.[`${name}_micros`]),
          }),
        ),
      ),
      h('p', { class: 'muted small' }, t('prices.blankHint')),
    ],
    submit: async (values) => {
      const model = creating ? values.model.trim() : row.model;
      const body = Object.fromEntries(
        FIELDS.map((name) => [`${name}_micros`, values[name].trim() ? dollarsToMicros(values[name]) : null]),
      );
      await put(`/api/prices/${encodeURIComponent(model)}`, body);
      await refresh();
    },
  });
}
