"""Coroutine listeners on the site's loop, and a bus run from inside an asyncio program."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

from wspbus import Bus, ChannelFailures


@pytest.fixture
def loop_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="site loop")
    thread.start()
    yield loop, thread
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_coroutine_listener_runs_on_the_site_loop_and_returns_its_result(loop_thread):
    loop, thread = loop_thread
    bus = Bus()
    bus.loop = loop
    ran_on = []

    async def double(x):
        await asyncio.sleep(0)
        ran_on.append(threading.current_thread())
        return x * 2

    bus.subscribe("compute", lambda x: x + 1, priority=10)
    bus.subscribe("compute", double, priority=20)
    assert bus.publish("compute", 21) == [22, 42]
    assert ran_on == [thread]
    bus.unsubscribe("compute", double)
    assert bus.publish("compute", 1) == [2]


def test_coroutine_stop_listener_runs_during_a_bounded_exit(loop_thread):
    loop, thread = loop_thread
    bus = Bus(graceful_timeout=5)
    bus.loop = loop
    closed = []

    async def close_pool():
        await asyncio.sleep(0.01)
        closed.append(threading.current_thread())

    bus.subscribe("stop", close_pool)
    bus.start()
    bus.exit()
    assert closed == [thread]


def test_without_a_site_loop_a_coroutine_listener_gets_a_private_one():
    bus = Bus()

    async def answer():
        await asyncio.sleep(0)
        return 42

    bus.subscribe("ask", answer)
    assert bus.publish("ask") == [42]


def test_publishing_from_the_loops_own_thread_is_a_clear_error():
    bus = Bus()

    async def listener():
        return "never"

    async def main():
        bus.loop = asyncio.get_running_loop()
        bus.subscribe("ch", listener)
        with pytest.raises(ChannelFailures) as info:
            bus.publish("ch")
        return info.value.get_instances()[0]

    error = asyncio.run(main())
    assert isinstance(error, RuntimeError) and "own event loop's thread" in str(error)


def test_run_bus_keeps_the_loop_free_and_stops_on_the_loops_signal_handling(spawn):
    child = spawn("""
        import asyncio, wspbus
        from wspbus.aio import run_bus
        bus = wspbus.Bus()
        ticks = 0

        async def ticker():
            global ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        async def open_pool():
            before = ticks
            await asyncio.sleep(0.2)
            print('start listener saw the loop tick', ticks - before, 'times', flush=True)
            return 'pool'

        async def close_pool():
            await asyncio.sleep(0)
            print('pool closed on the loop', flush=True)

        bus.subscribe('start', open_pool)
        bus.subscribe('stop', close_pool)
        bus.subscribe('log', lambda msg, level=20: print('LOG', msg, flush=True))

        async def main():
            task = asyncio.create_task(ticker())
            await run_bus(bus)
            task.cancel()
            print('run_bus returned', bus.state, flush=True)

        asyncio.run(main())
    """)
    assert int(child.expect(r"^start listener saw the loop tick (\d+) times").group(1)) >= 5
    child.expect("^LOG Bus STARTED$")
    child.send(signal.SIGTERM)
    child.expect("^pool closed on the loop$")
    child.expect("^run_bus returned states.EXITING$")
    assert child.wait() == 0


def test_run_bus_raises_a_failing_start_after_shutting_down():
    bus = Bus()
    stopped = []

    async def broken():
        raise ConnectionError("redis unreachable")

    bus.subscribe("start", broken)
    bus.subscribe("stop", lambda: stopped.append(True))

    from wspbus.aio import run_bus

    with pytest.raises(ChannelFailures, match="redis unreachable"):
        asyncio.run(run_bus(bus, exit_signals=()))
    assert stopped == [True]
