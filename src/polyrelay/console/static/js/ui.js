// Building blocks every page uses: elements, labelled fields, tables, dialogs, toasts.
// Text always goes in as text nodes, never as HTML, so data from the API cannot inject markup.
import { del } from './api.js';
import { t } from './i18n.js';

const PROPERTIES = new Set(['value', 'checked']);

/** `h('button', {class: 'primary', onclick}, 'Save')`: an element with attributes, listeners and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  const properties = [];
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) properties.push([name, value]);
    else element.setAttribute(name, value === true ? '' : value);
  }
  append(element, children);
  // Properties after the children: a <select> takes its value only once it has its options.
  for (const [name, value] of properties) element[name] = value;
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

let serial = 0;
export const uid = (prefix = 'id') => `${prefix}-${++serial}`;

/**
 * A labelled form control. `type` is an input type, 'select' (with `options`: [[value, text]]),
 * 'textarea' or 'checkbox'; other keys become the control's attributes.
 */
export function field({ name, label, type = 'text', value = '', hint, options, ...rest }) {
  const id = uid(`f-${name}`);
  const hintId = hint ? `${id}-hint` : null;
  const common = { id, name, 'aria-describedby': hintId, ...rest };
  const hintElement = hint ? h('small', { id: hintId, class: 'hint' }, hint) : null;
  if (type === 'checkbox') {
    return h(
      'div',
      { class: 'field check' },
      h('input', { ...common, type, checked: Boolean(value) }),
      h('label', { for: id }, label),
      hintElement,
    );
  }
  let control;
  if (type === 'select')
    control = h(
      'select',
      { ...common, value: String(value) },
      options.map(([v, text]) => h('option', { value: v }, text)),
    );
  else if (type === 'textarea') control = h('textarea', { rows: 3, ...common, value: value ?? '' });
  else control = h('input', { type, ...common, value: value ?? '' });
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintElement);
}

/** A new password and its repetition, as sign-up, password reset and the account page ask for them. */
export function newPasswordFields({ name, label, confirmLabel, autofocus = false }) {
  return [
    field({
      name,
      label,
      type: 'password',
      autocomplete: 'new-password',
      required: true,
      minlength: 8,
      autofocus,
      hint: t('account.newHint'),
    }),
    field({ name: 'confirm', label: confirmLabel, type: 'password', autocomplete: 'new-password', required: true }),
  ];
}

/** The form's named controls as {name: string | boolean}. */
export function readForm(form) {
  const values = {};
  for (const control of form.elements) {
    if (control.name) values[control.name] = control.type === 'checkbox' ? control.checked : control.value;
  }
  return values;
}

/**
 * A table. `columns`: [{label, value: row => text | node, class}]. With `details` (row => node),
 * each row gets a button that expands it to show that node underneath.
 */
export function table(columns, rows, { empty, details, label } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty ?? t('common.empty'));
  const body = h('tbody');
  for (const row of rows) {
    // data-label: on a phone each row is a card and each cell says what it is (app.css).
    const cells = columns.map((column) => h('td', { class: column.class, 'data-label': column.label }, column.value(row)));
    const tr = h('tr', {}, cells);
    body.append(tr);
    if (details)
      tr.prepend(
        h(
          'td',
          { class: 'expand' },
          expander(tr, columns.length + 1, () => details(row)),
        ),
      );
  }
  const head = h(
    'tr',
    {},
    details ? h('th', { scope: 'col', class: 'expand' }, h('span', { class: 'sr-only' }, t('common.details'))) : null,
    columns.map((column) => h('th', { scope: 'col', class: column.class }, column.label)),
  );
  return h(
    'div',
    { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': label ?? null },
    h('table', {}, h('thead', {}, head), body),
  );
}

function expander(tr, span, render) {
  const button = h(
    'button',
    { type: 'button', class: 'icon', 'aria-expanded': 'false', 'aria-label': t('common.showDetails') },
    '▸',
  );
  let detailRow = null;
  button.addEventListener('click', () => {
    if (detailRow) {
      detailRow.remove();
      detailRow = null;
    } else {
      detailRow = h('tr', { class: 'details' }, h('td', { colspan: span }, render()));
      tr.after(detailRow);
    }
    button.setAttribute('aria-expanded', String(Boolean(detailRow)));
    button.textContent = detailRow ? '▾' : '▸';
  });
  return button;
}

/** A definition list of [label, value] pairs. */
export function facts(pairs) {
  return h(
    'dl',
    { class: 'facts' },
    pairs.map(([label, value]) => [h('dt', {}, label), h('dd', {}, value)]),
  );
}

/** Previous / next paging. With `total` unknown, "next" is offered while pages come back full. */
export function pager({ offset, limit, count, total, onPage }) {
  const last = total === null || total === undefined ? count < limit : offset + count >= total;
  const range = count
    ? t(total === null || total === undefined ? 'pager.range' : 'pager.rangeOf', {
        from: offset + 1,
        to: offset + count,
        total,
      })
    : '';
  return h(
    'nav',
    { class: 'pager', 'aria-label': t('pager.label') },
    h(
      'button',
      { type: 'button', disabled: offset === 0, onclick: () => onPage(Math.max(0, offset - limit)) },
      t('pager.previous'),
    ),
    h('span', {}, range),
    h('button', { type: 'button', disabled: last, onclick: () => onPage(offset + limit) }, t('pager.next')),
  );
}

export function badge(text, kind = 'neutral') {
  return h('span', { class: `badge ${kind}` }, text);
}

export function pageHeader(title, ...actions) {
  return h(
    'header',
    { class: 'page-header' },
    h('h1', { tabindex: '-1' }, title),
    h('div', { class: 'actions' }, actions),
  );
}

export function button(label, onclick, { kind = '', ...rest } = {}) {
  return h('button', { type: 'button', class: kind || null, onclick, ...rest }, label);
}

/**
 * A modal <dialog>: the browser keeps focus inside it and closes it on Escape.
 * Returns {element, close, closed} where `closed` resolves when it is gone.
 */
export function openDialog(title, content, { wide = false } = {}) {
  const titleId = uid('dialog-title');
  const element = h(
    'dialog',
    { 'aria-labelledby': titleId, class: wide ? 'wide' : null },
    h(
      'header',
      {},
      h('h2', { id: titleId }, title),
      h(
        'button',
        { type: 'button', class: 'icon', 'aria-label': t('common.close'), onclick: () => element.close() },
        '×',
      ),
    ),
    content,
  );
  document.body.append(element);
  const closed = new Promise((resolve) =>
    element.addEventListener('close', () => {
      element.remove();
      resolve(element.returnValue);
    }),
  );
  element.showModal();
  // Start in the content (the first field, or the safe button of a confirmation), not on the × button.
  content.querySelector('[autofocus], input:not([type="hidden"]), select, textarea, button')?.focus();
  return { element, closed, close: (value = '') => element.close(value) };
}

/**
 * A dialog with a form. `submit(values)` may throw: its message is shown and the dialog stays.
 * Resolves with what `submit` returned, or null when the dialog was dismissed.
 */
export function formDialog({ title, fields, submitLabel = t('common.save'), submit, wide = false }) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const save = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const form = h(
    'form',
    { class: 'form' },
    fields,
    error,
    h(
      'footer',
      { class: 'dialog-actions' },
      h('button', { type: 'button', onclick: () => dialog.close() }, t('common.cancel')),
      save,
    ),
  );
  const dialog = openDialog(title, form, { wide });
  let result = null;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    save.disabled = true;
    error.hidden = true;
    try {
      result = (await submit(readForm(form))) ?? true;
      dialog.close('done');
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
    } finally {
      save.disabled = false;
    }
  });
  return dialog.closed.then(() => result);
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export function confirmDialog(message, confirmLabel = t('common.delete')) {
  const body = h(
    'div',
    {},
    h('p', {}, message),
    h(
      'footer',
      { class: 'dialog-actions' },
      h('button', { type: 'button', onclick: () => dialog.close('no') }, t('common.cancel')),
      h('button', { type: 'button', class: 'danger', onclick: () => dialog.close('yes') }, confirmLabel),
    ),
  );
  const dialog = openDialog(t('common.confirm'), body);
  return dialog.closed.then((value) => value === 'yes');
}

/** A Delete button that asks `question` first, then deletes `path` and calls `done` (the page's refresh). */
export function deleteButton(question, path, done, options = {}) {
  return button(
    t('common.delete'),
    async () => {
      if (await confirmDialog(question)) {
        await attempt(async () => {
          await del(path);
          await done();
        });
      }
    },
    { kind: 'danger', ...options },
  );
}

/** A secret shown once (a new key, new codes), with a copy button. */
export function secretBox(value, label) {
  const id = uid('secret');
  const multiline = value.includes('\n');
  const box = h(multiline ? 'textarea' : 'input', {
    id,
    class: 'secret',
    readonly: true,
    value,
    rows: multiline ? 6 : null,
  });
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h(
      'div',
      { class: 'secret-row' },
      box,
      copyButton(() => box.value, box),
    ),
  );
}

function copyButton(text, box) {
  return button(t('common.copy'), async () => {
    try {
      await navigator.clipboard.writeText(text());
      toast(t('common.copied'));
    } catch {
      box.select(); // the clipboard API needs a secure context; leave the text selected for Ctrl+C
      toast(t('common.copyManually'));
    }
  });
}

export function toast(message, kind = 'info') {
  const note = h('div', { class: `toast ${kind}` }, message);
  document.getElementById('toasts').append(note);
  setTimeout(() => note.remove(), kind === 'error' ? 8000 : 4000);
}

/** Run an action started by a click; failures become an error toast (a 401 already went to sign-in). */
export async function attempt(action) {
  try {
    return await action();
  } catch (error) {
    if (error.status !== 401) toast(error.message, 'error');
    return undefined;
  }
}

/** The page body while it loads, then what `load` renders, or the error it threw. */
export async function loading(container, load) {
  container.replaceChildren(h('p', { class: 'loading' }, t('common.loading')));
  try {
    container.replaceChildren(await load());
  } catch (error) {
    if (error.status === 401) return;
    container.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, error.message));
  }
}
