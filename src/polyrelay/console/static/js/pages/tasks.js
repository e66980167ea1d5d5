// The tasks gallery: one card per Midjourney, Suno, video or image task, with its media and, for
// Midjourney grids, the buttons that start the next action. Polls while any task is unfinished.
import { get } from '../api.js';
import { dateTime, money } from '../format.js';
import { keyForCall, relayFetch } from '../gatewaykey.js';
import { t } from '../i18n.js';
import { attempt, badge, button, field, h, pageHeader, toast } from '../ui.js';

const PAGE = 24;
const POLL_MS = 3000;
const FINISHED = new Set(['SUCCESS', 'FAILURE', 'CANCEL']);
const FAMILIES = ['midjourney', 'suno', 'luma', 'kling', 'flux', 'stability', 'ideogram', 'recraft'];
const STATUSES = ['NOT_START', 'SUBMITTED', 'IN_PROGRESS', 'SUCCESS', 'FAILURE', 'CANCEL'];

export async function render(page, { me }) {
  const filters = h(
    'form',
    { class: 'filters', 'aria-label': t('logs.filters') },
    me.role === 'admin'
      ? field({
          name: 'scope',
          label: t('common.scope'),
          type: 'select',
          value: 'me',
          options: [
            ['me', t('common.scopeMe')],
            ['all', t('common.scopeAll')],
          ],
        })
      : null,
    field({
      name: 'family',
      label: t('tasks.family'),
      type: 'select',
      value: '',
      options: [['', t('tasks.anyFamily')], ...FAMILIES.map((f) => [f, f])],
    }),
    field({
      name: 'status',
      label: t('tasks.status'),
      type: 'select',
      value: '',
      options: [['', t('tasks.anyStatus')], ...STATUSES.map((s) => [s, t(`tasks.state.${s}`)])],
    }),
  );
  const grid = h('div', { class: 'gallery', 'aria-live': 'polite' });
  const footer = h('div', { class: 'gallery-footer' });
  const cards = new Map(); // task id → {card, signature, task}
  let timer = null;
  let stopped = false;
  let nextBefore = null;

  const query = (before) => ({
    family: filters.elements.family.value,
    status: filters.elements.status.value,
    limit: PAGE,
    before,
  });
  const mine = () => filters.elements.scope?.value !== 'all';
  const list = () => (mine() ? '/api/me/tasks' : '/api/tasks');

  /** Put `tasks` in the grid: new ones in order at `where`, changed ones replaced in place. */
  const place = (tasks, where) => {
    let anchor = where === 'top' ? null : grid.lastChild;
    for (const task of tasks) {
      const signature = JSON.stringify([task.status, task.progress, task.media, task.buttons, task.fail_reason]);
      const known = cards.get(task.id);
      if (known && known.signature === signature) {
        anchor = known.card;
        continue;
      }
      const card = taskCard(task, mine() ? refresh : null);
      if (known) known.card.replaceWith(card);
      else if (anchor) anchor.after(card);
      else grid.prepend(card);
      cards.set(task.id, { card, signature, task });
      anchor = card;
    }
  };

  const schedule = () => {
    clearTimeout(timer);
    const busy = [...cards.values()].some(({ task }) => !FINISHED.has(task.status));
    if (busy && !stopped) timer = setTimeout(refresh, POLL_MS);
  };

  const showMore = (before) => {
    footer.replaceChildren(...(before ? [button(t('tasks.more'), () => attempt(loadMore))] : []));
  };

  async function refresh() {
    await attempt(async () => {
      const { data, next_before: before } = await get(list(), query());
      if (stopped) return;
      if (!cards.size) {
        nextBefore = before;
        showMore(before);
      }
      place(data, 'top');
      grid.querySelector('.empty')?.remove();
      if (!cards.size) grid.append(h('p', { class: 'empty' }, t('tasks.none')));
    });
    schedule();
  }

  async function loadMore() {
    const { data, next_before: before } = await get(list(), query(nextBefore));
    place(data, 'bottom');
    nextBefore = before;
    showMore(before);
    schedule();
  }

  filters.addEventListener('change', () => {
    cards.clear();
    grid.replaceChildren();
    refresh();
  });
  page.append(pageHeader(t('nav.tasks'), button(t('common.refresh'), refresh)), filters, grid, footer);
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A task's card; `refresh` is null for other users' tasks, whose buttons need their owner's key. */
function taskCard(task, refresh) {
  const finished = FINISHED.has(task.status);
  const kind =
    task.status === 'SUCCESS' ? 'ok' : task.status === 'FAILURE' ? 'error' : task.status === 'CANCEL' ? 'off' : 'busy';
  const progress = Number.parseInt(task.progress, 10);
  return h(
    'article',
    { class: 'task-card', 'data-task-id': task.id, 'aria-label': `${task.family} ${task.action} ${task.id}` },
    h(
      'div',
      { class: 'task-media' },
      task.media?.length
        ? task.media.map((item) => media(item, task))
        : h('div', { class: 'placeholder' }, task.family),
    ),
    h(
      'div',
      { class: 'task-body' },
      h(
        'div',
        { class: 'task-head' },
        badge(t(`tasks.state.${task.status}`), kind),
        h('span', { class: 'muted small' }, `${task.family} · ${task.action}`),
      ),
      finished
        ? null
        : h('progress', { max: 100, value: Number.isNaN(progress) ? 0 : progress, 'aria-label': t('tasks.progress') }),
      finished ? null : h('span', { class: 'small' }, task.progress || t('tasks.waiting')),
      task.prompt ? h('p', { class: 'prompt' }, task.prompt) : null,
      task.fail_reason ? h('p', { class: 'form-error' }, task.fail_reason) : null,
      refresh && task.buttons?.length
        ? h(
            'div',
            { class: 'task-buttons', role: 'group', 'aria-label': t('tasks.actions') },
            task.buttons.map((b) =>
              button(buttonText(b), () => attempt(() => action(task, b, refresh)), { title: b.customId }),
            ),
          )
        : null,
      h(
        'p',
        { class: 'muted small' },
        `${dateTime(task.submit_time)} · ${money(task.cost_micros)}${task.token_name ? ` · ${task.token_name}` : ''}`,
      ),
      h('p', { class: 'muted small mono' }, task.id),
    ),
  );
}

/** "U1", or for an emoji-only button like 🔄 the emoji and its action ("🔄 reroll" from MJ::JOB::reroll::…). */
function buttonText(choice) {
  return [choice.emoji, choice.label || choice.customId.split('::')[2]].filter(Boolean).join(' ');
}

function media(item, task) {
  if (item.kind === 'audio') return h('audio', { controls: true, preload: 'none', src: item.url });
  if (item.kind === 'video')
    return h('video', { controls: true, preload: 'metadata', src: item.url, poster: item.thumbnail || null });
  return h(
    'a',
    { href: item.url, target: '_blank', rel: 'noopener' },
    h('img', { src: item.thumbnail || item.url, alt: task.prompt || task.action, loading: 'lazy' }),
  );
}

/** A Midjourney button: POST /mj/submit/action with the user's gateway key. */
async function action(task, choice, refresh) {
  const key = await keyForCall();
  if (!key) return;
  const response = await relayFetch('/mj/submit/action', key, { customId: choice.customId, taskId: task.id });
  const reply = await response.json().catch(() => ({}));
  if (!response.ok || reply.code !== 1) {
    // the gateway reports every accepted submit as 1
    throw new Error(reply.description || reply.error?.message || t('error.http', { status: response.status }));
  }
  toast(t('tasks.submitted', { id: reply.result }));
  await refresh();
}
