// Redeem a code: its amount is credited to the balance.
import { post } from '../api.js';
import { money } from '../format.js';
import { t } from '../i18n.js';
import { facts, field, h, pageHeader, readForm } from '../ui.js';

export async function render(page, { me, refreshMe }) {
  const balance = h('strong', { class: 'balance-now' }, money(me.available_micros ?? me.balance_micros));
  const result = h('p', { role: 'status' });
  const form = h(
    'form',
    { class: 'form narrow' },
    field({ name: 'code', label: t('redeem.code'), required: true, autocomplete: 'off', spellcheck: 'false' }),
    h('button', { type: 'submit', class: 'primary' }, t('redeem.submit')),
    result,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    result.className = '';
    try {
      const { credited_micros: credited } = await post('/api/me/redeem', { code: readForm(form).code.trim() });
      const fresh = await refreshMe();
      balance.textContent = money(fresh.available_micros ?? fresh.balance_micros);
      result.textContent = t('redeem.credited', { amount: money(credited) });
      result.className = 'success';
      form.reset();
    } catch (error) {
      result.textContent = error.message;
      result.className = 'form-error';
    }
  });
  page.append(pageHeader(t('nav.redeem')), facts([[t('redeem.balance'), balance]]), form);
}
