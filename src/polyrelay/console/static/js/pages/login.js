// Sign-in: the landing page while signed out. The session is an HttpOnly cookie set by the API.
import { get, post } from '../api.js';
import { t } from '../i18n.js';
import { field, h, readForm } from '../ui.js';
import { errorInHash, errorText, signInButtons } from '../sso.js';
import { note, visitorCard } from './visitor.js';

export function render({ languageSwitch, onSignedIn }) {
  const ssoError = errorInHash();
  const error = h('p', { class: 'form-error', role: 'alert', hidden: !ssoError }, ssoError ? errorText(ssoError) : '');
  const sso = h('div');
  signInButtons().then((buttons) => buttons && sso.replaceChildren(buttons));
  const submit = h('button', { type: 'submit', class: 'primary wide' }, t('login.submit'));
  const form = h(
    'form',
    { class: 'form', 'aria-labelledby': 'visitor-title' },
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
      if (failure.code === 'email_unverified')
        error.replaceChildren(t('login.unverified'), ' ', h('a', { href: '#/verify' }, t('verify.resendTitle')));
      else error.textContent = failure.status === 401 ? t('login.wrong') : failure.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  const help = h('div', {}, h('p', { class: 'muted small' }, t('login.help')));
  // What else a visitor may do depends on the server's sign-up settings; the form works without them.
  get('/api/auth/signup')
    .then((options) => {
      const links = [];
      if (options.mode !== 'closed') links.push(['#/signup', t('signup.link')]);
      if (options.password_reset) links.push(['#/forgot', t('forgot.link')]);
      help.replaceChildren(note(options.mode === 'closed' ? t('login.help') : '', ...links));
    })
    .catch(() => {});
  return visitorCard({ languageSwitch, title: t('login.title'), content: [form, sso, help] });
}
