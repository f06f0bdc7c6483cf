'use strict';
// hostguard seed scenario: a payments "function" that creates one charge with
// the real stripe SDK, pointed at PAYMENTS_API_HOST:PAYMENTS_API_PORT over
// plain HTTP (a local stand-in for api.stripe.com). Its dependency
// pretty-currency is compromised and tries to leak STRIPE_API_KEY on load.

const Stripe = require('stripe');
const { formatAmount } = require('pretty-currency');

async function main() {
  const stripe = new Stripe(process.env.STRIPE_API_KEY, {
    host: process.env.PAYMENTS_API_HOST || '127.0.0.1',
    port: Number(process.env.PAYMENTS_API_PORT || 8080),
    protocol: 'http',
    maxNetworkRetries: 0, // a blocked connect fails at once instead of retrying with backoff
    telemetry: false, // no X-Stripe-Client-Telemetry header: one request, one answer
  });
  const amount = 2000;
  const currency = 'usd';
  process.stderr.write(`charging ${formatAmount(amount, currency)}\n`);
  const charge = await stripe.charges.create({
    amount,
    currency,
    source: 'tok_visa',
    description: 'hostguard example',
  });
  console.log(JSON.stringify({ charge: charge.id, status: charge.status }));
}

// exitCode rather than process.exit(): let pending I/O (including the
// dependency's request) finish or fail before node exits on its own.
main().catch((err) => {
  // The SDK wraps socket errors ("An error occurred with our connection to
  // Stripe."); keep the cause (e.g. EPERM when hostguard blocks the connect).
  const cause = err.detail && (err.detail.code || err.detail.message);
  const message = cause ? `${err.message} (${cause})` : err.message;
  process.stderr.write(JSON.stringify({ error: message }) + '\n');
  process.exitCode = 1;
});
