// A function that runs into its worker's pids limit: "bomb" starts processes
// until the system refuses, "nap" sleeps for half a second.
const { spawn } = require('child_process');

const children = [];

exports.handler = async (event) => {
  const action = event && event.do;
  if (action === 'bomb') {
    let started = 0;
    try {
      for (; started < 200; started++) {
        const child = spawn('sleep', ['1000']);
        await new Promise((resolve, reject) => {
          child.once('spawn', resolve);
          child.once('error', reject);
        });
        children.push(child);
      }
    } catch (err) {
      return { started, error: err.code };
    }
    return { started };
  }
  if (action === 'nap') {
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return 'ok';
};
