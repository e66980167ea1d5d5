// Every user's usage logs: the user logs view with a user filter and the channel columns.
import { logsView } from '../logs.js';

export async function render(page, context) {
  await logsView(page, { ...context, admin: true });
}
