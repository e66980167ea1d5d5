// Single sign-on in the console: the provider buttons (sign in, or link while signed in), the linked
// identities on the account page, and what an `sso_error` code the gateway sends back means.
import { get } from './api.js';
import { dateTime } from './format.js';
import { t } from './i18n.js';
import { deleteButton, h, table } from './ui.js';

const KNOWN_ERRORS = new Set([
  'invalid_state', 'email_not_verified', 'no_account', 'domain_not_allowed', 'account_disabled', 'email_in_use',
  'identity_in_use', 'access_denied', 'invalid_id_token', 'token_exchange_failed', 'discovery_failed',
  'profile_failed', 'invalid_issuer',
]);

/** The message for an `sso_error` code (the gateway's log has the details). */
export function errorText(code) {
  return KNOWN_ERRORS.has(code) ? t(`sso.error.${code}`) : t('sso.error.other', { code });
}

/** The `sso_error` code of the current hash route (#/login?sso_error=...), if any. */
export function errorInHash() {
  const query = location.hash.split('?')[1] ?? '';
  return new URLSearchParams(query).get('sso_error');
}

async function providers() {
  try {
    return (await get('/api/auth/sso')).data;
  } catch {
    return []; // the password form still works
  }
}

function providerLink(provider, label, link) {
  const href = `/api/auth/sso/${encodeURIComponent(provider.name)}/start${link ? '?link=1' : ''}`;
  return h('a', { class: `button sso-button sso-${provider.kind}`, href }, label);
}

/** The sign-in page's buttons: one per provider, nothing when none is configured. */
export async function signInButtons() {
  const list = await providers();
  if (!list.length) return null;
  return h(
    'div',
    { class: 'sso-buttons' },
    h('p', { class: 'sso-or muted small' }, t('sso.or')),
    list.map((provider) => providerLink(provider, t('sso.signInWith', { provider: provider.label }), false)),
  );
}

/** The account page's section: the identities linked to you (each removable) and buttons to link another. */
export async function identitiesSection(params) {
  const section = h('section', { class: 'sso-identities', 'aria-labelledby': 'sso-title' });
  const refresh = async () => {
    const [linked, list] = await Promise.all([get('/api/me/identities'), providers()]);
    const notice = params.get('sso_error')
      ? h('p', { class: 'form-error', role: 'alert' }, errorText(params.get('sso_error')))
      : params.get('sso_linked')
        ? h('p', { class: 'success', role: 'status' }, t('sso.linked'))
        : null;
    const parts = [
      h('h2', { id: 'sso-title' }, t('sso.identities')),
      notice,
      table(
        [
          { label: t('sso.provider'), value: (row) => row.label },
          { label: t('sso.email'), value: (row) => row.email ?? '—' },
          { label: t('sso.linkedAt'), value: (row) => dateTime(row.created_at) },
          {
            label: h('span', { class: 'sr-only' }, t('common.actions')),
            class: 'actions',
            value: (row) =>
              deleteButton(t('sso.confirmUnlink', { provider: row.label }), `/api/me/identities/${row.id}`, refresh, {
                'aria-label': `${t('common.delete')} ${row.label}`,
              }),
          },
        ],
        linked.data,
        { empty: t('sso.none') },
      ),
      list.length
        ? h('div', { class: 'sso-buttons' },
          list.map((provider) => providerLink(provider, t('sso.linkWith', { provider: provider.label }), true)))
        : null,
    ];
    section.replaceChildren(...parts.filter(Boolean));
  };
  await refresh();
  return section;
}
