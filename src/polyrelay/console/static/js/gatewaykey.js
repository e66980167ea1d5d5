// The gateway key the console uses for calls a user makes through the relay itself (the
// playground, Midjourney buttons). It lives in sessionStorage: this tab only, gone when closed.
import { t } from './i18n.js';
import { field, formDialog } from './ui.js';

const KEPT = 'polyrelay.gateway-key';

export function keptKey() {
  return sessionStorage.getItem(KEPT) || '';
}

export function keepKey(key) {
  if (key) sessionStorage.setItem(KEPT, key);
  else sessionStorage.removeItem(KEPT);
}

/** The kept key, or one the user pastes now (kept for the tab if they tick the box); null if cancelled. */
export async function keyForCall() {
  if (keptKey()) return keptKey();
  return formDialog({
    title: t('key.askTitle'),
    submitLabel: t('common.continue'),
    fields: [
      field({
        name: 'key',
        label: t('key.askLabel'),
        type: 'password',
        required: true,
        autocomplete: 'off',
        hint: t('key.askHint'),
      }),
      field({ name: 'keep', label: t('key.keepInTab'), type: 'checkbox', value: true }),
    ],
    submit: ({ key, keep }) => {
      if (keep) keepKey(key.trim());
      return key.trim();
    },
  });
}

/** A call to the relay (not the /api/) with the key as a Bearer token. */
export function relayFetch(path, key, body, signal) {
  return fetch(path, {
    method: 'POST',
    signal,
    credentials: 'omit',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
}
