// Sign-in: the landing page while signed out. The session is an HttpOnly cookie set by the API.
import { post } from '../api.js';
import { t } from '../i18n.js';
import { field, h, readForm } from '../ui.js';
import { errorInHash, errorText, signInButtons } from '../sso.js';

export function render({ languageSwitch, onSignedIn }) {
  const ssoError = errorInHash();
  const error = h('p', { class: 'form-error', role: 'alert', hidden: !ssoError }, ssoError ? errorText(ssoError) : '');
  const sso = h('div');
  signInButtons().then((buttons) => buttons && sso.replaceChildren(buttons));
  const submit = h('button', { type: 'submit', class: 'primary wide' }, t('login.submit'));
  const form = h(
    'form',
    { class: 'form', 'aria-labelledby': 'login-title' },
    field({ name: 'name', label: t('login.name'), autocomplete: 'username', required: true, autofocus: true }),
    field({
      name: 'password',
      label: t('login.password'),
      type: 'password',
      autocomplete: 'current-password',
      required: true,
    }),
    error,
    submit,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.hidden = true;
    try {
      await post('/api/auth/login', readForm(form));
      await onSignedIn();
    } catch (failure) {
      error.textContent = failure.status === 401 ? t('login.wrong') : failure.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  return h(
    'div',
    { class: 'login' },
    h('div', { class: 'login-top' }, languageSwitch),
    h(
      'main',
      { class: 'login-card' },
      h('p', { class: 'brand' }, 'polyrelay'),
      h('h1', { id: 'login-title' }, t('login.title')),
      form,
      sso,
      h('p', { class: 'muted small' }, t('login.help')),
    ),
  );
}
