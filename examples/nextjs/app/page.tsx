export default function Home() {
  return (
    <main>
      <h1>wabus × Next.js</h1>
      <ul>
        <li>
          <code>POST /api/whatsapp</code> receives wabus webhooks (verified with <code>standardwebhooks</code>
          ) and answers each received text with an echo.
        </li>
        <li>
          <code>GET /api/whatsapp/status</code> shows what it has verified.
        </li>
        <li>
          <code>POST /api/send</code> sends a text through the relay (needs <code>EXAMPLE_SEND_TOKEN</code>).
        </li>
      </ul>
    </main>
  );
}
