// Groups: a price ratio and the channels a group's users may use.
import { get, patch, post } from '../../api.js';
import { splitList } from '../../format.js';
import { t } from '../../i18n.js';
import { button, deleteButton, field, formDialog, h, loading, pageHeader, table } from '../../ui.js';

export async function render(page) {
  const list = h('div');
  const refresh = () => loading(list, () => groupTable(refresh));
  page.append(
    pageHeader(
      t('nav.admin/groups'),
      button(t('groups.create'), () => edit(null, refresh), { kind: 'primary' }),
    ),
    list,
  );
  await refresh();
}

async function groupTable(refresh) {
  const { data } = await get('/api/groups');
  return table(
    [
      { label: t('groups.name'), value: (row) => h('strong', {}, row.name) },
      { label: t('groups.ratio'), class: 'num', value: (row) => `× ${row.ratio}` },
      {
        label: t('groups.channels'),
        value: (row) => (row.channels?.length ? row.channels.join(', ') : t('groups.allChannels')),
      },
      { label: t('groups.description'), value: (row) => row.description || '—' },
      {
        label: t('common.actions'),
        class: 'row-actions',
        value: (row) => [
          button(t('common.edit'), () => edit(row, refresh), { 'aria-label': `${t('common.edit')} ${row.name}` }),
          deleteButton(t('groups.confirmDelete', { name: row.name }), `/api/groups/${encodeURIComponent(row.name)}`, refresh),
        ],
      },
    ],
    data,
    { empty: t('groups.none'), label: t('nav.admin/groups') },
  );
}

function edit(row, refresh) {
  const creating = row === null;
  return formDialog({
    title: creating ? t('groups.create') : t('groups.editTitle', { name: row.name }),
    submitLabel: creating ? t('common.create') : t('common.save'),
    fields: [
      creating ? field({ name: 'name', label: t('groups.name'), required: true, maxlength: 64 }) : null,
      field({
        name: 'ratio',
        label: t('groups.ratio'),
        type: 'number',
        min: 0,
        step: 'any',
        value: row?.ratio ?? 1,
        required: true,
        hint: t('groups.ratioHint'),
      }),
      field({
        name: 'channels',
        label: t('groups.channels'),
        value: row?.channels?.join(', ') ?? '',
        hint: t('groups.channelsHint'),
      }),
      field({ name: 'description', label: t('groups.description'), value: row?.description ?? '' }),
    ],
    submit: async (values) => {
      const channels = splitList(values.channels);
      const body = {
        ratio: Number(values.ratio),
        channels: channels.length ? channels : null,
        description: values.description,
      };
      await (creating
        ? post('/api/groups', { name: values.name.trim(), ...body })
        : patch(`/api/groups/${encodeURIComponent(row.name)}`, body));
      await refresh();
    },
  });
}
