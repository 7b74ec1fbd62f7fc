// Exercises every addon call (successes, failures, explicit release and
// finalizers) for valgrind: see run.sh. Usage: node --expose-gc exercise.cjs URI TMPDIR
const b = require(require('node:path').join(__dirname, '../../../build/Release/kvmbak.node'));
const uri = process.argv[2];
const swallow = (p) =>
  p.then(
    () => {},
    () => {},
  );
(async () => {
  for (let i = 0; i < 20; i++) {
    const c = await b.Connection.open(uri);
    await c.getURI();
    await c.getHostname();
    await c.getLibVersion();
    await c.getVersion();
    const all = await c.listAllDomains(0);
    all.forEach((d) => d.free());
    const d = await c.lookupDomainByName('web-01');
    d.getName();
    d.getUUIDString();
    d.getID();
    await d.getInfo();
    await d.getState(0);
    await d.getXMLDesc(0);
    await d.getBlockInfo('vda', 0);
    await swallow(d.getBlockInfo('vdz', 0));
    await swallow(d.getJobStats(0));
    await swallow(d.agentSetResponseTimeout(5, 0));
    await d.fsFreeze(null, 0);
    await d.fsThaw(['/'], 0);
    await d.fsThaw(null, 0);
    await d.suspend();
    await d.resume();
    await d.save(`${process.argv[3]}/leak-${i}.state`, null, 0);
    await c.restore(`${process.argv[3]}/leak-${i}.state`, null, 0);
    await swallow(c.lookupDomainByName('missing'));
    await swallow(c.defineXML('<domain'));
    const nd = await c.defineXML('<domain type="test"><name>leak-vm</name><memory>1024</memory><os><type>hvm</type></os></domain>');
    await nd.create();
    await nd.shutdown();
    await nd.undefineFlags(0);
    nd.free();
    const v = await c.lookupStorageVolByPath('/dev/vg0/web-root');
    v.getName();
    v.getKey();
    await v.getPath();
    await v.getInfo();
    const p = await v.lookupPoolByVolume();
    p.getName();
    await p.getInfo();
    const pv = await p.lookupVolumeByName('web-data-01');
    await pv.getPath();
    pv.free();
    await swallow(p.lookupVolumeByName('missing'));
    const inflight = p.lookupVolumeByName('web-root');
    p.free();
    (await inflight).free();
    v.free();
    await swallow(c.lookupStorageVolByPath('/dev/vg0/missing'));
    await swallow(c.lookupStoragePoolByName('missing'));
    // leaked wrapper: released by its finalizer
    await c.lookupDomainByName('db-01');
    d.free();
    if (i % 2) c.close(); // odd: explicit close; even: finalizer
  }
  for (let i = 0; i < 5; i++) {
    global.gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  const c = b.counters();
  console.log(JSON.stringify(c));
  if (Object.values(c).some((n) => n !== 0)) process.exitCode = 1;
})();
