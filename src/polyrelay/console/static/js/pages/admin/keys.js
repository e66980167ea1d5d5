// Every user's keys: search by key or user name, edit the limits an administrator imposes, disable, delete.
import { get } from '../../api.js';
import { t } from '../../i18n.js';
import { button, deleteButton, field, h, loading, pageHeader, pager, table } from '../../ui.js';
import { edit, keyColumns, toggleButton } from '../keys.js';

const PAGE = 100;

export async function render(page) {
  const list = h('div');
  let offset = 0;
  const search = field({ name: 'q', label: t('adminKeys.search'), type: 'search', maxlength: 128 });
  const input = search.querySelector('input');
  const refresh = () =>
    loading(list, async () => {
      const { data } = await get('/api/tokens', { q: input.value.trim(), limit: PAGE, offset });
      return h(
        'div',
        {},
        table(keyColumns((row) => actions(row, refresh), { owner: true }), data, {
          empty: t('adminKeys.none'),
          label: t('nav.admin/keys'),
        }),
        pager({ offset, limit: PAGE, count: data.length, onPage: (next) => ((offset = next), refresh()) }),
      );
    });
  let typing = null;
  input.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => ((offset = 0), refresh()), 300);
  });
  page.append(pageHeader(t('nav.admin/keys')), h('p', { class: 'muted' }, t('adminKeys.intro')), h('div', { class: 'filters' }, search), list);
  await refresh();
  return () => clearTimeout(typing);
}

function actions(row, refresh) {
  const path = `/api/tokens/${row.id}`;
  return [
    button(t('common.edit'), () => edit(row, path, refresh), { 'aria-label': `${t('common.edit')} ${row.name}` }),
    toggleButton(row, path, refresh),
    deleteButton(t('keys.confirmDelete', { name: row.name }), path, refresh, { 'aria-label': `${t('common.delete')} ${row.name}` }),
  ];
}
